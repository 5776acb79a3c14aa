/*
 * TEST ONLY — never shipped, never part of a release.
 *
 * Wine 8.0 (Debian bookworm) has no bcryptprimitives.dll!ProcessPrng, which Rust's standard
 * library imports for its random numbers (HashMap seeds), so no Rust .exe starts under it. The
 * Wine smoke test (tests/it/wine.rs) builds this stand-in with x86_64-w64-mingw32-gcc into its
 * throw-away Wine prefix's system32. ProcessPrng's contract (fill the buffer, always succeed)
 * is met with advapi32's RtlGenRandom (exported as SystemFunction036), which Wine implements.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
