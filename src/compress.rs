//! Compressed files: SymStore's `/compress` form, a cabinet (CAB) holding exactly one file.
//!
//! Data flow: the cascade spools a compressed hit to a local temp file (CAB needs seeking),
//! then [`expand_cab`] streams the one member into a writer, verifying the member count, the
//! announced size and an output cap. MSZIP and LZX are decoded by the `cab` crate (LZX through
//! `lzxd`). Peers were bitten by LZX bugs and silent CAB failures (mstange/symsrv#1,
//! symbolicator#1172), hence the strict checks.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Default cap on an expanded file: 8 GiB (the largest PDBs seen in the wild are a few GiB).
pub const DEFAULT_MAX_EXPANDED: u64 = 8 << 30;

/// `true` when `header` starts with the CAB signature `MSCF`. Sniff, do not trust names.
pub fn is_cab(header: &[u8]) -> bool {
    header.starts_with(b"MSCF")
}

/// Why a compressed file could not be expanded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// Not a CAB (no `MSCF` signature) or a malformed one.
    #[error("not a valid cabinet: {0}")]
    NotCab(String),
    /// SymStore writes exactly one file per cabinet; anything else is refused.
    #[error("cabinet holds {0} files, expected exactly one")]
    NotOneFile(usize),
    /// The member would expand beyond the cap.
    #[error("expanded size {size} exceeds the cap of {cap} bytes")]
    TooLarge {
        /// Announced uncompressed size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// Decoding failed midway or produced a different size than announced.
    #[error("decompression failed: {0}")]
    Decode(String),
    /// Writing the output failed.
    #[error("writing expanded output: {0}")]
    Write(#[source] io::Error),
}

/// Expands the single member of the cabinet in `cab` into `out`, returning
/// `(member name, bytes written)`.
///
/// # Errors
/// [`CompressError`] when the input is not a one-file cabinet, expands beyond `max_out`,
/// fails to decode, or `out` fails. `out` may then hold partial data: callers write to a temp
/// file and discard it.
pub fn expand_cab<R: Read + Seek, W: Write>(
    mut cab: R,
    out: &mut W,
    max_out: u64,
) -> Result<(String, u64), CompressError> {
    // `cab` 0.6.0 panics (index out of bounds in `FolderReader::seek_to_uncompressed_offset`)
    // when a file starts beyond its folder's data. SymStore's one member starts its folder, so
    // any other start is refused before the crate sees it (found by fuzzing, fuzz/ `cab`).
    match first_member_offset(&mut cab) {
        Ok(Some(0) | None) => {}
        Ok(Some(off)) => {
            return Err(CompressError::NotCab(format!(
                "the member starts at offset {off} of its folder, not at its start"
            )));
        }
        Err(e) => return Err(CompressError::NotCab(e.to_string())),
    }
    let mut cabinet = cab::Cabinet::new(cab).map_err(|e| CompressError::NotCab(e.to_string()))?;
    let files: Vec<(String, u64)> = cabinet
        .folder_entries()
        .flat_map(|f| {
            f.file_entries()
                .map(|e| (e.name().to_string(), e.uncompressed_size() as u64))
                .collect::<Vec<_>>()
        })
        .collect();
    if files.len() != 1 {
        return Err(CompressError::NotOneFile(files.len()));
    }
    let (name, size) = files.into_iter().next().expect("one file");
    if size > max_out {
        return Err(CompressError::TooLarge { size, cap: max_out });
    }
    let reader = cabinet
        .read_file(&name)
        .map_err(|e| CompressError::Decode(e.to_string()))?;
    // Read one byte past the announced size to catch a lying header.
    let mut limited = reader.take(size + 1);
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CompressError::Decode(e.to_string())),
        };
        out.write_all(&buf[..n]).map_err(CompressError::Write)?;
        written += n as u64;
    }
    if written != size {
        return Err(CompressError::Decode(format!(
            "member {name:?} announced {size} bytes, produced {written}"
        )));
    }
    out.flush().map_err(CompressError::Write)?;
    Ok((name, written))
}

/// The first file's offset in its folder (`uoffFolderStart` of the first CFFILE entry), read
/// from the raw header; `None` when the input is too short or has no `MSCF` signature (the
/// `cab` crate then says what is wrong). Leaves `cab` at its start, where the crate reads from.
fn first_member_offset<R: Read + Seek>(cab: &mut R) -> io::Result<Option<u32>> {
    let short = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => Ok(None),
        _ => Err(e),
    };
    cab.seek(SeekFrom::Start(0))?;
    // CFHEADER: signature, reserved, cbCabinet, reserved, coffFiles (u32 LE at offset 16).
    let mut hdr = [0u8; 20];
    if let Err(e) = cab.read_exact(&mut hdr) {
        cab.seek(SeekFrom::Start(0))?;
        return short(e);
    }
    let mut offset = None;
    if is_cab(&hdr) {
        let coff_files = u32::from_le_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
        // CFFILE: cbFile, then uoffFolderStart.
        cab.seek(SeekFrom::Start(u64::from(coff_files) + 4))?;
        let mut off = [0u8; 4];
        offset = match cab.read_exact(&mut off) {
            Ok(()) => Some(u32::from_le_bytes(off)),
            Err(e) => short(e)?,
        };
    }
    cab.seek(SeekFrom::Start(0))?;
    Ok(offset)
}

/// Writes `input` as a one-file MSZIP cabinet named `member` into `out` (what `symstore
/// /compress` produces, with MSZIP instead of LZX). Used to build compressed stores for tests
/// and examples.
///
/// # Errors
/// I/O errors from reading or writing.
pub fn write_cab<R: Read, W: Write + Seek>(member: &str, input: &mut R, out: W) -> io::Result<W> {
    let mut builder = cab::CabinetBuilder::new();
    builder
        .add_folder(cab::CompressionType::MsZip)
        .add_file(member);
    let mut writer = builder.build(out)?;
    while let Some(mut f) = writer.next_file()? {
        io::copy(input, &mut f)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn round_trip_and_checks() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let cab = write_cab("a.pdb", &mut &body[..], Cursor::new(Vec::new()))
            .unwrap()
            .into_inner();
        assert!(is_cab(&cab));
        assert!(cab.len() < body.len());
        let mut out = Vec::new();
        let (name, n) = expand_cab(Cursor::new(&cab), &mut out, u64::MAX).unwrap();
        assert_eq!((name.as_str(), n), ("a.pdb", body.len() as u64));
        assert_eq!(out, body);
        let e = expand_cab(Cursor::new(&cab), &mut Vec::new(), 1000).unwrap_err();
        assert!(matches!(e, CompressError::TooLarge { .. }), "{e}");
        let e = expand_cab(Cursor::new(b"MSCFgarbage".to_vec()), &mut Vec::new(), 10).unwrap_err();
        assert!(matches!(e, CompressError::NotCab(_)), "{e}");
    }

    /// Fuzzing regression (fuzz/ `cab`): a member starting at offset 0x4400 of a folder
    /// holding 78 bytes made `cab` 0.6.0 index past its data blocks and panic.
    #[test]
    fn member_starting_past_its_folder_is_refused() {
        let cab = write_cab("member.txt", &mut &[b'x'; 78][..], Cursor::new(Vec::new()))
            .unwrap()
            .into_inner();
        let coff_files = u32::from_le_bytes(cab[16..20].try_into().unwrap()) as usize;
        let mut bad = cab.clone();
        bad[coff_files + 4..coff_files + 8].copy_from_slice(&0x4400u32.to_le_bytes());
        let e = expand_cab(Cursor::new(bad), &mut Vec::new(), 1 << 20).unwrap_err();
        assert!(matches!(e, CompressError::NotCab(_)), "{e}");
        // The untouched cabinet still expands; truncated headers are errors, not panics.
        assert_eq!(
            expand_cab(Cursor::new(&cab), &mut Vec::new(), 1 << 20)
                .unwrap()
                .1,
            78
        );
        for n in [0, 4, 19, 20, coff_files + 6] {
            assert!(
                expand_cab(Cursor::new(&cab[..n]), &mut Vec::new(), 1 << 20).is_err(),
                "{n}"
            );
        }
    }

    #[test]
    fn multi_file_cabinets_are_refused() {
        let mut builder = cab::CabinetBuilder::new();
        let folder = builder.add_folder(cab::CompressionType::MsZip);
        folder.add_file("a");
        folder.add_file("b");
        let mut w = builder.build(Cursor::new(Vec::new())).unwrap();
        while let Some(mut f) = w.next_file().unwrap() {
            io::Write::write_all(&mut f, b"x").unwrap();
        }
        let cab = w.finish().unwrap().into_inner();
        let e = expand_cab(Cursor::new(cab), &mut Vec::new(), 10).unwrap_err();
        assert!(matches!(e, CompressError::NotOneFile(2)), "{e}");
    }
}
