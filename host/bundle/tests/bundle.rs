//! Bundle round trip, tampering, trust and malformed-file cases.

use std::path::Path;

use ed25519_dalek::SigningKey;
use lmmhost_bundle::container::RawBundle;
use lmmhost_bundle::keys::{
    key_id, parse_public_line, public_line, read_secret_key, write_keypair,
};
use lmmhost_bundle::{
    open_bundle_bytes, open_verified, pack_dir, sha256_hex, sign_manifest, verify_bundle_bytes,
    TrustPolicy, World,
};

fn component(iface: &str, version: &str, marker: &str) -> Vec<u8> {
    // `marker` makes otherwise identical components hash differently.
    wat::parse_str(format!(
        r#"(component
            (import "lmmhost:plugin/types@{version}" (instance))
            (import "{marker}" (instance))
            (instance)
            (export "lmmhost:plugin/{iface}@{version}" (instance 2)))"#
    ))
    .unwrap()
}

fn bundle_dir(dir: &Path, reward_version: &str) {
    std::fs::write(
        dir.join("reward_math.wasm"),
        component("reward", reward_version, "a:b/c"),
    )
    .unwrap();
    std::fs::write(
        dir.join("loader.wasm"),
        component("loader", "0.1.0", "a:b/d"),
    )
    .unwrap();
    std::fs::write(
        dir.join("bundle.toml"),
        r#"
name = "team-a-rewards"
version = "1.2.0"
description = "Math accuracy and a JSONL loader"

[[component]]
file = "reward_math.wasm"
name = "math"
[component.config]
boxed_weight = 0.9
order = ["boxed", "answer"]

[[component]]
file = "loader.wasm"
"#,
    )
    .unwrap();
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn trust(keys: &[&SigningKey], allow_unsigned: bool) -> TrustPolicy {
    TrustPolicy {
        trusted_keys: keys
            .iter()
            .map(|k| parse_public_line(&public_line(&k.verifying_key(), "team-a")).unwrap())
            .collect(),
        allow_unsigned,
    }
}

fn packed(signer: Option<&SigningKey>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    bundle_dir(dir.path(), "0.1.0");
    pack_dir(dir.path(), signer).unwrap()
}

fn refusal(bytes: &[u8], policy: &TrustPolicy) -> String {
    format!("{:#}", verify_bundle_bytes(bytes, policy).unwrap_err())
}

#[test]
fn round_trip_pack_inspect_verify() {
    let k = key(7);
    let bytes = packed(Some(&k));
    let opened = open_bundle_bytes(&bytes).unwrap();
    let m = &opened.manifest;
    assert_eq!(m.name, "team-a-rewards");
    assert_eq!(m.version, "1.2.0");
    assert_eq!(m.wit_package, "lmmhost:plugin");
    assert_eq!(m.wit_version, "0.1.0");
    assert_eq!(m.components.len(), 2);
    assert_eq!(m.components[0].name, "math");
    assert_eq!(m.components[0].file, "reward_math.wasm");
    assert_eq!(m.components[0].world, "reward-plugin");
    assert_eq!(m.components[1].name, "loader");
    assert_eq!(m.components[1].world, "loader-plugin");
    let reward = component("reward", "0.1.0", "a:b/c");
    assert_eq!(m.components[0].sha256, sha256_hex(&reward));
    assert_eq!(m.components[0].size, reward.len() as u64);
    assert_eq!(
        opened.signature.as_ref().unwrap().key_id,
        key_id(&k.verifying_key())
    );

    let v = verify_bundle_bytes(&bytes, &trust(&[&k], false)).unwrap();
    assert_eq!(
        v.signed_by.as_ref().unwrap().key_id,
        key_id(&k.verifying_key())
    );
    assert_eq!(v.signed_by.as_ref().unwrap().name, "team-a");
    let math = v.component("math").unwrap();
    assert_eq!(math.world, World::Reward);
    assert_eq!(math.bytes, reward);
    let cfg: toml::Table = toml::from_str(&math.default_config).unwrap();
    assert_eq!(cfg["boxed_weight"].as_float(), Some(0.9));
    assert_eq!(cfg["order"].as_array().unwrap().len(), 2);
    assert_eq!(v.component("loader").unwrap().default_config, "");

    // Packing is deterministic: same inputs, same bytes.
    assert_eq!(bytes, packed(Some(&k)));
}

#[test]
fn open_verified_from_file_and_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("team.key");
    let (pub_path, id) = write_keypair(&secret, "team-a").unwrap();
    assert_eq!(pub_path, dir.path().join("team.pub"));
    // Refuses to overwrite.
    assert!(write_keypair(&secret, "x").is_err());
    let k = read_secret_key(&secret).unwrap();
    assert_eq!(key_id(&k.verifying_key()), id);

    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle_dir(&src, "0.1.0");
    let path = dir.path().join("x.lmmb");
    std::fs::write(&path, pack_dir(&src, Some(&k)).unwrap()).unwrap();

    let trusted = dir.path().join("trusted_keys");
    let other = public_line(&key(9).verifying_key(), "team-b");
    let pub_line = std::fs::read_to_string(&pub_path).unwrap();
    std::fs::write(&trusted, format!("# keys we trust\n\n{other}\n{pub_line}")).unwrap();
    let v = open_verified(&path, &TrustPolicy::from_file(&trusted, false).unwrap()).unwrap();
    assert_eq!(v.signed_by.unwrap().name, "team-a");

    // Bad trusted-keys line names file and line.
    std::fs::write(&trusted, format!("{other}\ned25519 zz bad\n")).unwrap();
    let err = format!("{:#}", TrustPolicy::from_file(&trusted, false).unwrap_err());
    assert!(err.contains("trusted_keys:2"), "{err}");
    // Missing file.
    let err = format!(
        "{:#}",
        open_verified(&dir.path().join("nope.lmmb"), &TrustPolicy::default()).unwrap_err()
    );
    assert!(err.contains("cannot read bundle"), "{err}");
}

fn edit(bytes: &[u8], f: impl FnOnce(&mut RawBundle)) -> Vec<u8> {
    let mut raw = RawBundle::decode(bytes).unwrap();
    f(&mut raw);
    raw.encode()
}

#[test]
fn tampering_is_refused_with_the_reason() {
    let k = key(7);
    let policy = trust(&[&k], false);
    let bytes = packed(Some(&k));

    // Component bytes changed (same length).
    let t = edit(&bytes, |r| {
        let c = &mut r.components[0].1;
        let n = c.len();
        c[n - 3] ^= 1;
    });
    let err = refusal(&t, &policy);
    assert!(
        err.contains("component `math`: SHA-256 is") && err.contains("component modified"),
        "{err}"
    );

    // Component replaced by a different valid component.
    let t = edit(&bytes, |r| {
        r.components[0].1 = component("reward", "0.1.0", "x:y/z")
    });
    let err = refusal(&t, &policy);
    assert!(
        err.contains("component `math`") && err.contains("component modified"),
        "{err}"
    );

    // Manifest edited (description), signature left alone.
    let t = edit(&bytes, |r| {
        let text = String::from_utf8(r.manifest.clone()).unwrap();
        r.manifest = text.replace("JSONL loader", "JSONL reader").into_bytes();
    });
    let err = refusal(&t, &policy);
    assert!(err.contains("does not match the manifest"), "{err}");

    // Manifest edited to match a swapped component: still caught by the signature.
    let evil = component("reward", "0.1.0", "evil:x/y");
    let t = edit(&bytes, |r| {
        let text = String::from_utf8(r.manifest.clone()).unwrap();
        let old = sha256_hex(&r.components[0].1);
        r.manifest = text.replace(&old, &sha256_hex(&evil)).into_bytes();
        r.components[0].1 = evil.clone();
    });
    assert!(refusal(&t, &policy).contains("does not match the manifest"));

    // Signature swapped for the same key's signature of another bundle.
    let other_dir = tempfile::tempdir().unwrap();
    bundle_dir(other_dir.path(), "0.1.0");
    std::fs::write(
        other_dir.path().join("bundle.toml"),
        "name = \"other\"\nversion = \"0.0.1\"\n[[component]]\nfile = \"loader.wasm\"\n",
    )
    .unwrap();
    let other = RawBundle::decode(&pack_dir(other_dir.path(), Some(&k)).unwrap()).unwrap();
    let t = edit(&bytes, |r| r.signature = other.signature.clone());
    assert!(refusal(&t, &policy).contains("does not match the manifest"));

    // Component added.
    let t = edit(&bytes, |r| {
        r.components
            .push(("extra".into(), component("reward", "0.1.0", "q:r/s")))
    });
    let err = refusal(&t, &policy);
    assert!(
        err.contains("component `extra` is in the bundle but not listed in the manifest"),
        "{err}"
    );

    // Component removed.
    let t = edit(&bytes, |r| {
        r.components.remove(1);
    });
    let err = refusal(&t, &policy);
    assert!(
        err.contains("component `loader` is listed in the manifest but missing"),
        "{err}"
    );

    // Signature stripped: now an unsigned bundle, refused unless allowed.
    let t = edit(&bytes, |r| r.signature = None);
    assert!(refusal(&t, &policy).contains("not signed"));
}

#[test]
fn wrong_and_untrusted_keys() {
    let a = key(7);
    let b = key(8);
    let bytes = packed(Some(&a));
    // Signed by A, only B trusted: refused naming A's key id.
    let err = refusal(&bytes, &trust(&[&b], false));
    assert!(
        err.contains(&format!("signed by key id {}", key_id(&a.verifying_key()))),
        "{err}"
    );
    assert!(err.contains("not in the trusted keys"), "{err}");
    // Also refused with allow_unsigned: a signature by an unknown key is not "unsigned".
    assert!(refusal(&bytes, &trust(&[&b], true)).contains("not in the trusted keys"));
    // Re-signed by B (wrong key for a team that trusts only A): refused.
    let t = edit(&bytes, |r| {
        r.signature = Some(sign_manifest(&r.manifest, &b))
    });
    assert!(refusal(&t, &trust(&[&a], false)).contains(&key_id(&b.verifying_key())));
    // Signature record claiming A's public key but made with B's secret: bad signature.
    let t = edit(&bytes, |r| {
        let forged = String::from_utf8(sign_manifest(&r.manifest, &b)).unwrap();
        r.signature = Some(
            forged
                .replace(
                    &hex::encode(b.verifying_key().as_bytes()),
                    &hex::encode(a.verifying_key().as_bytes()),
                )
                .into_bytes(),
        );
    });
    assert!(refusal(&t, &trust(&[&a], false)).contains("does not match the manifest"));
    // Both trusted: accepted.
    assert!(verify_bundle_bytes(&bytes, &trust(&[&b, &a], false)).is_ok());
}

#[test]
fn unsigned_with_and_without_allow() {
    let bytes = packed(None);
    let err = refusal(&bytes, &trust(&[], false));
    assert!(
        err.contains("bundle is not signed and unsigned bundles are not allowed"),
        "{err}"
    );
    let v = verify_bundle_bytes(&bytes, &trust(&[], true)).unwrap();
    assert!(v.signed_by.is_none());
    assert_eq!(v.components.len(), 2);
    // Hashes are still checked for unsigned bundles.
    let t = edit(&bytes, |r| r.components[1].1.push(0));
    assert!(refusal(&t, &trust(&[], true)).contains("component `loader`: size"));
}

#[test]
fn incompatible_wit_version_refused_at_pack_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    bundle_dir(dir.path(), "0.9.0");
    let err = format!("{:#}", pack_dir(dir.path(), None).unwrap_err());
    assert!(err.contains("reward_math.wasm"), "{err}");
    assert!(
        err.contains(
            "plugin needs lmmhost:plugin@0.9.0, this host speaks @0.1.0 and @0.2.0 (compatible: 0.1.x, 0.2.x)"
        ),
        "{err}"
    );

    // A bundle made elsewhere (e.g. by a newer lmmhost) holding a 0.9.0 component.
    let k = key(7);
    let bytes = packed(Some(&k));
    let newer = component("reward", "0.9.0", "a:b/c");
    let t = edit(&bytes, |r| {
        let text = String::from_utf8(r.manifest.clone()).unwrap();
        let old_hash = sha256_hex(&r.components[0].1);
        let old_size = format!("size = {}", r.components[0].1.len());
        r.manifest = text
            .replace(&old_hash, &sha256_hex(&newer))
            .replace(&old_size, &format!("size = {}", newer.len()))
            .replace("wit_version = \"0.1.0\"", "wit_version = \"0.9.0\"")
            .into_bytes();
        r.components[0].1 = newer.clone();
        r.signature = Some(sign_manifest(&r.manifest, &k));
    });
    let err = refusal(&t, &trust(&[&k], false));
    assert!(
        err.contains("plugin needs lmmhost:plugin@0.9.0, this host speaks @0.1.0 and @0.2.0"),
        "{err}"
    );
}

#[test]
fn a_bundle_may_mix_contract_versions_the_host_serves() {
    // A team's 0.2.0 reward with an older 0.1.0 loader: both are served, and
    // the manifest's version is the newest any component needs.
    let dir = tempfile::tempdir().unwrap();
    bundle_dir(dir.path(), "0.2.0");
    let bytes = pack_dir(dir.path(), None).unwrap();
    let m = open_bundle_bytes(&bytes).unwrap().manifest;
    assert_eq!(m.wit_version, "0.2.0");
    assert_eq!(m.components[0].wit_version, "0.2.0");
    assert_eq!(m.components[1].wit_version, "0.1.0");
    let v = verify_bundle_bytes(&bytes, &trust(&[], true)).unwrap();
    assert_eq!(v.components.len(), 2);
}

#[test]
fn pack_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let err = format!("{:#}", pack_dir(dir.path(), None).unwrap_err());
    assert!(err.contains("bundle.toml"), "{err}");
    bundle_dir(dir.path(), "0.1.0");
    std::fs::write(dir.path().join("loader.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let err = format!("{:#}", pack_dir(dir.path(), None).unwrap_err());
    assert!(err.contains("core WebAssembly module"), "{err}");
    std::fs::write(
        dir.path().join("bundle.toml"),
        "name = \"x\"\nversion = \"1\"\nbogus = 1\n",
    )
    .unwrap();
    let err = format!("{:#}", pack_dir(dir.path(), None).unwrap_err());
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn malformed_bundle_files_are_clear_errors() {
    let policy = trust(&[], true);
    let err = refusal(b"garbage garbage garbage", &policy);
    assert!(err.contains("not an lmmhost bundle"), "{err}");
    assert!(refusal(b"", &policy).contains("not an lmmhost bundle"));
    let bytes = packed(None);
    // Every truncation is an error (never a panic); most say "truncated".
    for cut in 0..bytes.len() {
        assert!(
            verify_bundle_bytes(&bytes[..cut], &policy).is_err(),
            "cut {cut}"
        );
    }
    let err = refusal(&bytes[..bytes.len() - 10], &policy);
    assert!(err.contains("truncated"), "{err}");
    // Random byte flips never panic.
    for i in (0..bytes.len()).step_by(3) {
        let mut b = bytes.clone();
        b[i] = b[i].wrapping_add(0x5a);
        let _ = verify_bundle_bytes(&b, &policy);
    }
    // Huge declared length.
    let mut b = bytes[..12].to_vec();
    b.extend_from_slice(&[b'M', 0, 0]);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(refusal(&b, &policy).contains("truncated"));
    // Unknown container version.
    let mut b = bytes.clone();
    b[8] = 9;
    assert!(refusal(&b, &policy).contains("container format 9"));
    // Bytes appended to a complete bundle are named as such, not as a truncated record.
    for tail in [&b"\n"[..], b"appended text\n", &[0u8; 64]] {
        let mut b = bytes.clone();
        b.extend_from_slice(tail);
        let err = refusal(&b, &policy);
        assert!(
            err.contains(&format!(
                "{} bytes of trailing data at byte {}",
                tail.len(),
                bytes.len()
            )) && !err.contains("truncated"),
            "{err}"
        );
    }
}
