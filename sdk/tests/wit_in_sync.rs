//! The SDK carries a copy of the WIT contract (sdk/wit/) so that the crate
//! builds outside this repository; it must stay identical to wit/v0.2.0/.

use std::path::Path;

#[test]
fn sdk_wit_copy_matches_the_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let contract = root.join("../wit/v0.2.0");
    if !contract.is_dir() {
        // Built from a published crate: there is no contract folder to compare with.
        return;
    }
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wit"))
            .collect();
        v.sort();
        v
    };
    let copy = root.join("wit");
    assert_eq!(
        names(&contract),
        names(&copy),
        "sdk/wit/ and wit/v0.2.0/ list different files"
    );
    for name in names(&contract) {
        let a = std::fs::read(contract.join(&name)).unwrap();
        let b = std::fs::read(copy.join(&name)).unwrap();
        assert!(
            a == b,
            "sdk/wit/{name} differs from wit/v0.2.0/{name}: run `cp wit/v0.2.0/*.wit sdk/wit/`"
        );
    }
}
