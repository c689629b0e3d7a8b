//! The contract every store must meet, as one suite run against each backend (local and
//! in-memory in unit tests, S3 through s3s-fs in the mounted tests, real clouds when their
//! credentials are set). It needs an empty store and leaves it empty.

use super::{Store, StoreError};

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Runs the suite; the error says which expectation failed.
pub fn run(s: &dyn Store) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    check!(s.is_empty().map_err(e)?, "store must start empty");
    check!(matches!(s.get("packs/a"), Err(StoreError::NotFound(_))), "get of a missing object must be NotFound");
    s.put("packs/a", b"hello world").map_err(e)?;
    check!(!s.is_empty().map_err(e)?, "store with an object is not empty");
    check!(s.get("packs/a").map_err(e)? == b"hello world", "get returns what put stored");
    check!(s.get_range("packs/a", 6, 5).map_err(e)? == b"world", "get_range returns the range");
    check!(
        matches!(s.get_range("packs/a", 6, 6), Err(StoreError::ShortObject { .. })),
        "a range past the end must be ShortObject"
    );
    check!(s.get_range_upto("packs/a", 6, 100).map_err(e)? == b"world", "get_range_upto stops at the end");
    check!(s.get_range_upto("packs/a", 11, 4).map_err(e)?.is_empty(), "get_range_upto at the end is empty");
    check!(s.get_range_upto("packs/a", 50, 4).map_err(e)?.is_empty(), "get_range_upto past the end is empty");
    check!(matches!(s.get_range_upto("packs/zz", 0, 1), Err(StoreError::NotFound(_))), "range of a missing object (upto)");
    check!(matches!(s.get_range("packs/zz", 0, 1), Err(StoreError::NotFound(_))), "range of a missing object");
    s.put("packs/a", b"replaced").map_err(e)?;
    check!(s.get("packs/a").map_err(e)? == b"replaced", "put replaces");
    s.put_new("meta/1", b"one").map_err(e)?;
    check!(
        matches!(s.put_new("meta/1", b"two"), Err(StoreError::AlreadyExists(_))),
        "conditional create of an existing object must be AlreadyExists"
    );
    check!(s.get("meta/1").map_err(e)? == b"one", "a refused conditional create changes nothing");
    // Conditional replace: only from the version read; a stale version, or a deleted object, is Changed.
    let (body, v1) = s.get_versioned("meta/1", 64).map_err(e)?;
    check!(body == b"one", "get_versioned returns the object");
    check!(s.get_versioned("meta/1", 2).map_err(e)?.0 == b"on", "get_versioned stops at its length");
    s.put_replacing("meta/1", b"three", &v1).map_err(e)?;
    check!(s.get("meta/1").map_err(e)? == b"three", "a conditional replace from the current version replaces");
    check!(
        matches!(s.put_replacing("meta/1", b"four", &v1), Err(StoreError::Changed(_))),
        "a conditional replace from a stale version must be Changed"
    );
    check!(s.get("meta/1").map_err(e)? == b"three", "a refused conditional replace changes nothing");
    let (_, v3) = s.get_versioned("meta/1", 64).map_err(e)?;
    check!(v3 != v1, "a replace gives the object a new version");
    s.put_new("meta/2", b"x").map_err(e)?;
    let (_, vx) = s.get_versioned("meta/2", 64).map_err(e)?;
    s.delete("meta/2").map_err(e)?;
    check!(
        matches!(s.put_replacing("meta/2", b"y", &vx), Err(StoreError::Changed(_))),
        "a conditional replace of a deleted object must be Changed"
    );
    check!(matches!(s.get("meta/2"), Err(StoreError::NotFound(_))), "a refused replace does not recreate");
    check!(matches!(s.get_versioned("meta/zz", 4), Err(StoreError::NotFound(_))), "get_versioned of a missing object");
    s.put("top", b"t").map_err(e)?;
    check!(s.list("packs/").map_err(e)? == vec![("packs/a".to_string(), 8)], "list by prefix with sizes");
    check!(s.list("meta/").map_err(e)? == vec![("meta/1".to_string(), 5)], "list another prefix");
    check!(s.list("nothing/").map_err(e)?.is_empty(), "list of an empty prefix");
    // A name of its own per run: suites on several stores may run at once in one process.
    let tmp = std::env::temp_dir().join(format!("pgcfs-conformance-{}", crate::format::hex(&crate::crypto::random_id())));
    std::fs::write(&tmp, b"file body").map_err(|x| x.to_string())?;
    s.put_file("packs/f", &tmp).map_err(e)?;
    check!(s.get("packs/f").map_err(e)? == b"file body", "put_file uploads the file");
    s.put_moving("packs/g", &tmp).map_err(e)?;
    check!(s.get("packs/g").map_err(e)? == b"file body", "put_moving uploads the file");
    check!(!tmp.exists(), "put_moving removes the local file");
    for k in ["packs/a", "packs/f", "packs/g", "meta/1", "top"] {
        s.delete(k).map_err(e)?;
    }
    s.delete("packs/a").map_err(e)?;
    check!(matches!(s.get("packs/a"), Err(StoreError::NotFound(_))), "deleted objects are gone");
    check!(s.list("packs/").map_err(e)?.is_empty(), "deleted objects are not listed");
    Ok(())
}
