//! The cascade's plan, as pure functions: which stores a symbol path names and how its chains
//! are shaped ([`shape`]), which stores a hit is copied into and in which order
//! ([`destinations`]), how a hit is delivered ([`delivery`]: answered in place, streamed into
//! its only destination, or spooled and verified first) and what each destination receives
//! ([`copies`]: which form, from which bytes, put or replace). The executor in the parent module
//! does the I/O the plan describes; nothing here touches a store, so every SymSrv rule has a
//! table test below.
//!
//! Semantics (Microsoft "Advanced SymSrv Use": "Cascading Downstream Stores" and "Working With
//! HTTP and SMB Symbol Server Paths"; `shared/semantics.md`):
//! - a hit in store *i* is copied into stores *i-1 … 0*, nearest first (cascade order);
//! - HTTP stores cannot be written: they are searched last in their chain and never receive
//!   copies; `srv*X` with one store does no caching, except when X is HTTP or the hit is
//!   compressed: then the default downstream store receives it;
//! - a compressed hit stays compressed in intermediate stores and is expanded only into the
//!   bottom-most store (SymProxy's `NoUncompress` keeps it compressed there too); a bottom-most
//!   store holding only the compressed form gets the expansion beside it;
//! - `cache*` stores receive the hits of every element to their right, nearest first;
//! - a downstream store whose root holds `wantsptr.txt` receives a followed `file.ptr` rather
//!   than the file it points to;
//! - a store named twice is written once.

use super::SearchKind;
use crate::layout::Form;
use crate::sympath::{Element, Location, StoreSpec, SymbolPath};

/// A store of the symbol path: an index into [`Shape::stores`]. Each distinct location is one
/// store, however often the path names it.
pub type StoreId = usize;

/// One element of the symbol path as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainShape {
    /// Stores in search order, downstream first; HTTP stores moved to the end (they cannot be
    /// written, and peers accept them anywhere in a chain).
    pub tiers: Vec<StoreId>,
    /// `srv*X` with a single store: the default downstream store, used when X is HTTP or the
    /// hit is compressed (`None` when X is the default downstream store itself).
    pub implicit_downstream: Option<StoreId>,
    /// `cache*` stores to the left of this element, leftmost first.
    pub caches: Vec<StoreId>,
    /// How the tiers are searched: `Flat` for a plain folder (autodetection of `pingme.txt`
    /// may turn it into `Store` later, which needs I/O).
    pub search: SearchKind,
    /// The element as written, for reports.
    pub element: String,
}

/// A symbol path's stores and chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Each distinct location once, in order of first mention.
    pub stores: Vec<Location>,
    /// One chain per element, in search order.
    pub chains: Vec<ChainShape>,
}

impl Shape {
    /// Whether store `id` can never be written (HTTP).
    pub fn read_only(&self, id: StoreId) -> bool {
        self.stores[id].is_http()
    }
}

/// The stores and chains of `path`; empty tokens and `srv*X` caching use `default_downstream`.
pub fn shape(path: &SymbolPath, default_downstream: &Location) -> Shape {
    let mut stores: Vec<Location> = Vec::new();
    let mut id_of = |loc: &Location| match stores.iter().position(|l| l == loc) {
        Some(i) => i,
        None => {
            stores.push(loc.clone());
            stores.len() - 1
        }
    };
    let mut spec_id = |spec: &StoreSpec| match spec {
        StoreSpec::DefaultDownstream => id_of(default_downstream),
        StoreSpec::At(l) => id_of(l),
    };
    let mut chains = Vec::new();
    let mut caches: Vec<StoreId> = Vec::new();
    for el in &path.elements {
        let element = el.to_string();
        let (tiers, implicit_downstream, search) = match el {
            Element::Server { stores: specs, .. } => {
                let (mut order, http): (Vec<_>, Vec<_>) = specs
                    .iter()
                    .partition(|s| !matches!(s, StoreSpec::At(l) if l.is_http()));
                order.extend(http);
                let tiers: Vec<StoreId> = order.into_iter().map(&mut spec_id).collect();
                let dd = (tiers.len() == 1)
                    .then(|| spec_id(&StoreSpec::DefaultDownstream))
                    .filter(|d| *d != tiers[0]);
                (tiers, dd, SearchKind::Store)
            }
            Element::Cache { store } => (vec![spec_id(store)], None, SearchKind::Store),
            Element::Plain { location } => (
                vec![spec_id(&StoreSpec::At(location.clone()))],
                None,
                SearchKind::Flat,
            ),
        };
        chains.push(ChainShape {
            caches: caches.clone(),
            tiers: tiers.clone(),
            implicit_downstream,
            search,
            element,
        });
        if matches!(el, Element::Cache { .. }) {
            caches.push(tiers[0]);
        }
    }
    Shape { stores, chains }
}

/// A store a hit is copied into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    /// The store.
    pub id: StoreId,
    /// Bottom-most: receives the expanded form of a compressed hit (unless `NoUncompress`).
    pub bottom: bool,
}

/// The stores a hit in tier `hit` of chain `chain` is copied into, in cascade order (nearest
/// first, then the `cache*` stores nearest first), each once, never a read-only one.
pub fn destinations(
    shape: &Shape,
    chain: usize,
    hit: usize,
    form: Form,
    uncompress: bool,
) -> Vec<Dest> {
    let c = &shape.chains[chain];
    let source = c.tiers[hit];
    let mut dests: Vec<Dest> = (0..hit)
        .rev()
        .map(|j| Dest {
            id: c.tiers[j],
            bottom: j == 0,
        })
        .collect();
    let compressed = form == Form::Compressed;
    if hit == 0
        && compressed
        && uncompress
        && c.search == SearchKind::Store
        && c.implicit_downstream.is_none()
    {
        // The bottom-most store holds only the compressed form: expand it in place.
        dests.push(Dest {
            id: source,
            bottom: true,
        });
    }
    if let Some(d) = c.implicit_downstream
        && (shape.read_only(source) || compressed)
    {
        dests.push(Dest {
            id: d,
            bottom: true,
        });
    }
    dests.extend(c.caches.iter().rev().map(|&id| Dest { id, bottom: true }));
    let mut seen = Vec::new();
    dests.retain(|d| {
        let first = !seen.contains(&d.id);
        seen.push(d.id);
        first && !shape.read_only(d.id)
    });
    dests
}

/// What is known about a hit before its bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The form found.
    pub form: Form,
    /// Found by following a `file.ptr`.
    pub via_ptr: bool,
    /// The key's name is of a kind whose content can be verified (PE, PDB, ...).
    pub keyable: bool,
    /// The length the source announced.
    pub len: Option<u64>,
    /// A client is waiting for the bytes as they arrive (the HTTP front's tap).
    pub tapped: bool,
}

/// How a hit is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No store to copy into: answered where it is, as SymSrv reads it in place (a local file
    /// is verified first; a remote one that must be read to be verified is copied instead).
    InPlace,
    /// Streamed straight into its only destination, without a spool file: one destination
    /// that takes the source form as it is, content with nothing to verify but its announced
    /// non-zero length, nobody waiting on a tap, no bad file to replace there.
    Direct(StoreId),
    /// Read once into a spool file, verified, then copied into each destination.
    Spool,
}

/// How to deliver `hit` found in a chain searched as `search` into `dests`; `refused` are the
/// stores whose file under the final name was found bad (they get a replacement).
pub fn delivery(search: SearchKind, dests: &[Dest], hit: &Hit, refused: &[StoreId]) -> Delivery {
    if dests.is_empty() && !hit.via_ptr {
        return Delivery::InPlace;
    }
    let streamable = search == SearchKind::Store
        && !hit.tapped
        && !hit.via_ptr
        && hit.form == Form::Plain
        && !hit.keyable
        && hit.len.is_some_and(|n| n > 0);
    match dests {
        [d] if streamable && !refused.contains(&d.id) => Delivery::Direct(d.id),
        _ => Delivery::Spool,
    }
}

/// Which spooled bytes a copy is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bytes {
    /// The file as read from the source (plain, or compressed as found).
    Raw,
    /// The expansion of a compressed hit.
    Expanded,
    /// The `file.ptr` text that was followed.
    PtrText,
}

/// One copy into one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// The store.
    pub id: StoreId,
    /// The form written (decides the file name).
    pub form: Form,
    /// The bytes written.
    pub bytes: Bytes,
    /// Replace a bad file under the final name (`Store::replace`) instead of `put`.
    pub replace: bool,
}

/// Facts about one destination that the plan needs, found by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DestFacts {
    /// The store's root holds `wantsptr.txt`.
    pub wants_ptr: bool,
    /// The form of a bad file found there under its final name, if any.
    pub refused: Option<Form>,
}

/// The copies for a hit of `form` in store `source` (`via_ptr`: found through a `file.ptr`;
/// `expanded`: a verified expansion exists), one per destination that needs one, in order.
/// A bad plain file is replaced by the plain form (else it would shadow the compressed copy).
pub fn copies(
    dests: &[Dest],
    facts: &[DestFacts],
    source: StoreId,
    form: Form,
    via_ptr: bool,
    expanded: bool,
) -> Vec<Copy> {
    dests
        .iter()
        .zip(facts)
        .filter_map(|(d, f)| {
            let expand = (d.bottom || f.refused == Some(Form::Plain)) && expanded;
            let (form_out, bytes) = match () {
                _ if via_ptr && f.wants_ptr => (Form::FilePtr, Bytes::PtrText),
                _ if expand => (Form::Plain, Bytes::Expanded),
                _ => (form, Bytes::Raw),
            };
            // The source itself only receives a different form (the expansion beside it).
            (d.id != source || form_out != form).then_some(Copy {
                id: d.id,
                form: form_out,
                bytes,
                replace: f.refused.is_some(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Form::{Compressed as C, FilePtr as F, Plain as P};

    fn dd() -> Location {
        Location::Local {
            path: "D:\\dbg\\sym".into(),
        }
    }

    /// The copy plan of a hit, as text: `store form[<-bytes][ replace]`, `, ` between copies;
    /// stores by their last path component (`dd` is the default downstream store).
    fn plan(path: &str, chain: usize, hit: usize, form: Form, uncompress: bool) -> String {
        let sp: SymbolPath = path.parse().unwrap();
        let s = shape(&sp, &dd());
        let dests = destinations(&s, chain, hit, form, uncompress);
        let facts = vec![DestFacts::default(); dests.len()];
        let source = s.chains[chain].tiers[hit];
        let name = |id: StoreId| {
            let l = s.stores[id].to_string();
            let n = l.rsplit(['\\', '/']).next().unwrap().to_string();
            if s.stores[id] == dd() { "dd".into() } else { n }
        };
        copies(&dests, &facts, source, form, false, form == C && uncompress)
            .iter()
            .map(|c| {
                let f = match c.form {
                    P => "plain",
                    C => "compressed",
                    F => "file.ptr",
                };
                format!("{} {f}", name(c.id))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One row per rule of the reference pages ("Cascading Downstream Stores", "Working With
    /// HTTP and SMB Symbol Server Paths") and `shared/semantics.md`.
    #[test]
    fn symsrv_copy_rules() {
        let rows: &[(&str, usize, usize, Form, bool, &str)] = &[
            // "srv*c:\localcache*\\interim\store*https://msdl…": found in the interim store →
            // copied to c:\localcache; found on msdl → copied to both, interim first.
            (
                r"srv*c:\localcache*\\interim\store*https://msdl.microsoft.com/download/symbols",
                0,
                1,
                P,
                true,
                "localcache plain",
            ),
            (
                r"srv*c:\localcache*\\interim\store*https://msdl.microsoft.com/download/symbols",
                0,
                2,
                P,
                true,
                "store plain, localcache plain",
            ),
            // Found in the local cache: returned in place, nothing copied.
            (
                r"srv*c:\localcache*\\interim\store*https://msdl.microsoft.com/download/symbols",
                0,
                0,
                P,
                true,
                "",
            ),
            // "srv**\\interim\store*https://internetsite": the empty token is the default
            // downstream store.
            (
                r"srv**\\interim\store*https://internetsite",
                0,
                2,
                P,
                true,
                "store plain, dd plain",
            ),
            // The branch-office deployment: main → branch → desktop.
            (
                r"srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols",
                0,
                2,
                P,
                true,
                "Symbols plain, Symbols plain",
            ),
            // "A compressed symbol file … stored in compressed form in any mid-level store …
            // uncompressed in the bottom-most store"; NoUncompress keeps it compressed.
            (
                r"srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols",
                0,
                2,
                C,
                true,
                "Symbols compressed, Symbols plain",
            ),
            (
                r"srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols",
                0,
                2,
                C,
                false,
                "Symbols compressed, Symbols compressed",
            ),
            // The bottom-most store holding only the compressed form gets the expansion.
            (r"srv*C:\Symbols*\\M\S", 0, 0, C, true, "Symbols plain"),
            (r"srv*C:\Symbols*\\M\S", 0, 0, C, false, ""),
            // srv*X alone: a plain SMB hit is read in place; HTTP or a compressed hit goes to
            // the default downstream store.
            (r"srv*\\MachineName\Symbols", 0, 0, P, true, ""),
            (r"srv*\\MachineName\Symbols", 0, 0, C, true, "dd plain"),
            (
                r"srv*https://msdl.microsoft.com/download/symbols",
                0,
                0,
                P,
                true,
                "dd plain",
            ),
            // An HTTP store left of the end is searched last and never written ("only one
            // can be specified (per chain), and it must be at the end"): tier 1 is \\M\S,
            // tier 2 the HTTP store.
            (r"srv*C:\s1*https://h/sym*\\M\S", 0, 1, P, true, "s1 plain"),
            (
                r"srv*C:\s1*https://h/sym*\\M\S",
                0,
                2,
                P,
                true,
                "S plain, s1 plain",
            ),
            // cache* receives the hits of every element to its right, nearest first.
            (
                r"cache*C:\k;srv*C:\a*\\M\S",
                1,
                1,
                P,
                true,
                "a plain, k plain",
            ),
            (
                r"cache*C:\k1;cache*C:\k2;srv*\\M\S",
                2,
                0,
                C,
                true,
                "dd plain, k2 plain, k1 plain",
            ),
            (r"cache*C:\k;C:\flat", 1, 0, P, true, "k plain"),
            // A store named twice is written once.
            (r"cache*C:\a;srv*C:\a*\\M\S", 1, 1, P, true, "a plain"),
        ];
        for (path, chain, hit, form, uncompress, want) in rows {
            let got = plan(path, *chain, *hit, *form, *uncompress);
            assert_eq!(
                &got, want,
                "{path} chain {chain} tier {hit} {form:?} uncompress {uncompress}"
            );
        }
    }

    #[test]
    fn http_stores_go_last_and_default_downstream_is_shared() {
        let sp: SymbolPath = r"srv*https://h/s*C:\a*\\M\S;srv*\\X\Y;srv**\\Z\W"
            .parse()
            .unwrap();
        let s = shape(&sp, &dd());
        let names: Vec<String> = s.stores.iter().map(|l| l.to_string()).collect();
        assert_eq!(s.chains[0].tiers.len(), 3);
        assert!(names[s.chains[0].tiers[2]].starts_with("https://"));
        assert_eq!(
            s.chains[1].implicit_downstream,
            s.chains[2].tiers.first().copied()
        );
        assert_eq!(s.chains[2].tiers.len(), 2);
    }

    #[test]
    fn wantsptr_and_refused_files() {
        let dests = [
            Dest {
                id: 1,
                bottom: false,
            },
            Dest {
                id: 0,
                bottom: true,
            },
        ];
        // A followed file.ptr: a `wantsptr.txt` store gets the pointer, the other the file.
        let facts = [
            DestFacts {
                wants_ptr: true,
                refused: None,
            },
            DestFacts::default(),
        ];
        let c = copies(&dests, &facts, 2, P, true, false);
        assert_eq!((c[0].form, c[0].bytes), (F, Bytes::PtrText));
        assert_eq!((c[1].form, c[1].bytes), (P, Bytes::Raw));
        // Without a pointer, wantsptr changes nothing.
        let c = copies(&dests, &facts, 2, P, false, false);
        assert_eq!(c[0].form, P);
        // A bad plain file in an intermediate store is replaced by the expansion (it would
        // shadow the compressed copy); a bad compressed one by the compressed form.
        let facts = [
            DestFacts {
                wants_ptr: false,
                refused: Some(P),
            },
            DestFacts {
                wants_ptr: false,
                refused: Some(C),
            },
        ];
        let c = copies(&dests, &facts, 2, C, false, true);
        assert_eq!(
            (c[0].form, c[0].bytes, c[0].replace),
            (P, Bytes::Expanded, true)
        );
        assert_eq!(
            (c[1].form, c[1].bytes, c[1].replace),
            (P, Bytes::Expanded, true)
        );
        // The source store gets only the other form.
        let c = copies(
            &[Dest {
                id: 0,
                bottom: true,
            }],
            &[DestFacts::default()],
            0,
            C,
            false,
            true,
        );
        assert_eq!((c[0].form, c[0].bytes), (P, Bytes::Expanded));
        let c = copies(
            &[Dest {
                id: 0,
                bottom: true,
            }],
            &[DestFacts::default()],
            0,
            C,
            false,
            false,
        );
        assert!(c.is_empty());
    }

    #[test]
    fn delivery_strategies() {
        let hit = |form, keyable, len, tapped, via_ptr| Hit {
            form,
            via_ptr,
            keyable,
            len,
            tapped,
        };
        let one = [Dest {
            id: 0,
            bottom: true,
        }];
        let two = [
            Dest {
                id: 1,
                bottom: false,
            },
            Dest {
                id: 0,
                bottom: true,
            },
        ];
        let st = SearchKind::Store;
        let h = hit(P, false, Some(10), false, false);
        assert_eq!(delivery(st, &[], &h, &[]), Delivery::InPlace);
        assert_eq!(delivery(st, &one, &h, &[]), Delivery::Direct(0));
        // Anything that must be verified, announced, replaced or fanned out is spooled.
        assert_eq!(delivery(st, &two, &h, &[]), Delivery::Spool);
        assert_eq!(delivery(st, &one, &h, &[0]), Delivery::Spool);
        assert_eq!(delivery(SearchKind::Flat, &one, &h, &[]), Delivery::Spool);
        for h in [
            hit(P, true, Some(10), false, false),
            hit(P, false, None, false, false),
            hit(P, false, Some(0), false, false),
            hit(P, false, Some(10), true, false),
            hit(C, false, Some(10), false, false),
            hit(P, false, Some(10), false, true),
        ] {
            assert_eq!(delivery(st, &one, &h, &[]), Delivery::Spool, "{h:?}");
        }
        // A followed file.ptr is copied even with no destination (its target is elsewhere).
        let h = hit(P, true, Some(10), false, true);
        assert_eq!(delivery(st, &[], &h, &[]), Delivery::Spool);
    }
}
