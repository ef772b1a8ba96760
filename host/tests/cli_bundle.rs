//! `lmmhost bundle keygen|pack|inspect|verify` as a user runs them: exit
//! codes, what is printed, and the reason given for each refusal.
//! Needs the built plugins (scripts/build-plugins.sh).

mod cli_support;

use cli_support::{ok, plugin, refused};
use std::path::{Path, PathBuf};

/// A work directory with `rules/` holding two components and a bundle.toml.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::copy(plugin("reward-math"), rules.join("reward_math.wasm")).unwrap();
    std::fs::copy(plugin("reward-format"), rules.join("reward_format.wasm")).unwrap();
    std::fs::write(
        rules.join("bundle.toml"),
        r#"name = "team-a-rewards"
version = "1.2.0"
description = "Math accuracy plus R1 format"

[[component]]
file = "reward_math.wasm"
name = "math"
[component.config]
format = "r1"
correct = 1.0

[[component]]
file = "reward_format.wasm"
"#,
    )
    .unwrap();
    (t, dir)
}

fn key_id(stdout: &str) -> String {
    let at = stdout.find("key id ").expect("no key id printed") + "key id ".len();
    stdout[at..at + 16].to_string()
}

#[test]
fn keygen_pack_inspect_verify_round_trip() {
    let (_t, dir) = setup();
    let out = ok(&dir, &["bundle", "keygen", "-o", "team.key"]);
    assert!(
        out.contains("secret key: team.key") && out.contains("team.pub"),
        "{out}"
    );
    let id = key_id(&out);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    let public = std::fs::read_to_string(dir.join("team.pub")).unwrap();
    assert!(
        public.starts_with("ed25519 ") && public.trim_end().ends_with(" team"),
        "{public}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("team.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Keygen never overwrites a key.
    let e = refused(&dir, &["bundle", "keygen", "-o", "team.key"]);
    assert!(e.contains("team.key already exists"), "{e}");

    let out = ok(
        &dir,
        &[
            "bundle", "pack", "rules", "-o", "a.lmmb", "--sign", "team.key",
        ],
    );
    assert!(
        out.contains("packed team-a-rewards 1.2.0 (2 components")
            && out.contains(&format!("signed by key id {id}"))
            && out.contains("-> a.lmmb"),
        "{out}"
    );
    // Deterministic: the same inputs give the same bytes.
    ok(
        &dir,
        &[
            "bundle", "pack", "rules", "-o", "b.lmmb", "--sign", "team.key",
        ],
    );
    assert_eq!(
        std::fs::read(dir.join("a.lmmb")).unwrap(),
        std::fs::read(dir.join("b.lmmb")).unwrap()
    );

    let out = ok(&dir, &["bundle", "inspect", "a.lmmb"]);
    let math_sha = sha256_of(&dir.join("rules/reward_math.wasm"));
    assert!(out.contains("bundle       team-a-rewards 1.2.0"), "{out}");
    assert!(
        out.contains("wit          lmmhost:plugin@0.2.0 (host speaks @0.1.0 and @0.2.0)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "signed       yes, ed25519 key id {id} (not verified"
        )),
        "{out}"
    );
    assert!(out.contains("components   2"), "{out}");
    assert!(
        out.contains("math") && out.contains("reward-plugin") && out.contains(&math_sha),
        "{out}"
    );
    assert!(out.contains("reward_format"), "{out}");
    assert!(
        out.contains("format = \"r1\""),
        "default config shown: {out}"
    );

    let out = ok(
        &dir,
        &["bundle", "verify", "a.lmmb", "--trusted-keys", "team.pub"],
    );
    assert!(
        out.starts_with(
            "OK team-a-rewards 1.2.0: 2 components, hashes match, WIT @0.2.0 served by this host (@0.1.0 and @0.2.0)"
        ) && out.contains(&format!("signed by trusted key id {id} (team)")),
        "{out}"
    );
}

fn sha256_of(p: &Path) -> String {
    lmmhost_bundle::sha256_hex(&std::fs::read(p).unwrap())
}

#[test]
fn tampered_and_untrusted_bundles_are_refused_with_the_reason() {
    let (_t, dir) = setup();
    ok(&dir, &["bundle", "keygen", "-o", "team.key"]);
    let other = ok(
        &dir,
        &["bundle", "keygen", "-o", "other.key", "--name", "mallory"],
    );
    let other_id = key_id(&other);
    ok(
        &dir,
        &[
            "bundle",
            "pack",
            "rules",
            "-o",
            "a.lmmb",
            "--sign",
            "other.key",
        ],
    );

    // Signed by a key that is not trusted: refused, naming the key id,
    // even with --allow-unsigned.
    for extra in [&[][..], &["--allow-unsigned"][..]] {
        let mut args = vec!["bundle", "verify", "a.lmmb", "--trusted-keys", "team.pub"];
        args.extend_from_slice(extra);
        let e = refused(&dir, &args);
        assert!(
            e.contains("a.lmmb refused")
                && e.contains(&format!(
                    "signed by key id {other_id}, which is not in the trusted keys"
                )),
            "{e}"
        );
    }

    // A component changed after packing (its last byte).
    ok(
        &dir,
        &[
            "bundle", "pack", "rules", "-o", "t.lmmb", "--sign", "team.key",
        ],
    );
    let mut bytes = std::fs::read(dir.join("t.lmmb")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(dir.join("t.lmmb"), &bytes).unwrap();
    let e = refused(
        &dir,
        &["bundle", "verify", "t.lmmb", "--trusted-keys", "team.pub"],
    );
    assert!(
        e.contains("component `reward_format`: SHA-256 is") && e.contains("(component modified)"),
        "{e}"
    );

    // The manifest edited after signing (same length, so the layout still parses).
    ok(
        &dir,
        &[
            "bundle", "pack", "rules", "-o", "m.lmmb", "--sign", "team.key",
        ],
    );
    let bytes = std::fs::read(dir.join("m.lmmb")).unwrap();
    let edited = replace_once(&bytes, b"version = \"1.2.0\"", b"version = \"9.9.9\"");
    std::fs::write(dir.join("m.lmmb"), edited).unwrap();
    let e = refused(
        &dir,
        &["bundle", "verify", "m.lmmb", "--trusted-keys", "team.pub"],
    );
    assert!(
        e.contains("does not match the manifest (manifest edited"),
        "{e}"
    );

    // Truncated file.
    std::fs::write(dir.join("cut.lmmb"), &bytes[..bytes.len() / 2]).unwrap();
    let e = refused(
        &dir,
        &["bundle", "verify", "cut.lmmb", "--trusted-keys", "team.pub"],
    );
    assert!(e.contains("truncated"), "{e}");
    // Not a bundle at all; inspect refuses it too.
    let e = refused(&dir, &["bundle", "inspect", "team.pub"]);
    assert!(e.contains("not an lmmhost bundle"), "{e}");
}

#[test]
fn unsigned_bundles_need_allow_unsigned() {
    let (_t, dir) = setup();
    let out = ok(&dir, &["bundle", "pack", "rules", "-o", "u.lmmb"]);
    assert!(!out.contains("signed by"), "{out}");
    ok(&dir, &["bundle", "keygen", "-o", "team.key"]);
    let e = refused(
        &dir,
        &["bundle", "verify", "u.lmmb", "--trusted-keys", "team.pub"],
    );
    assert!(
        e.contains("not signed and unsigned bundles are not allowed"),
        "{e}"
    );
    let out = ok(&dir, &["bundle", "verify", "u.lmmb", "--allow-unsigned"]);
    assert!(
        out.contains("OK team-a-rewards 1.2.0") && out.contains("unsigned (allowed)"),
        "{out}"
    );
    let e = refused(&dir, &["bundle", "verify", "u.lmmb"]);
    assert!(e.contains("--trusted-keys FILE is required"), "{e}");
    let out = ok(&dir, &["bundle", "inspect", "u.lmmb"]);
    assert!(out.contains("signed       no"), "{out}");
}

#[test]
fn pack_refuses_bad_inputs_naming_the_file() {
    let (_t, dir) = setup();
    // A core module, not a component.
    std::fs::write(dir.join("rules/core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let toml = std::fs::read_to_string(dir.join("rules/bundle.toml")).unwrap();
    std::fs::write(
        dir.join("rules/bundle.toml"),
        format!("{toml}\n[[component]]\nfile = \"core.wasm\"\n"),
    )
    .unwrap();
    let e = refused(&dir, &["bundle", "pack", "rules", "-o", "x.lmmb"]);
    assert!(e.contains("core.wasm"), "{e}");
    assert!(!dir.join("x.lmmb").exists());
    // A missing secret key file.
    std::fs::write(dir.join("rules/bundle.toml"), toml).unwrap();
    let e = refused(
        &dir,
        &[
            "bundle",
            "pack",
            "rules",
            "-o",
            "x.lmmb",
            "--sign",
            "nokey.key",
        ],
    );
    assert!(e.contains("nokey.key"), "{e}");
    // A secret key file given as the public key output would lose the secret.
    let e = refused(&dir, &["bundle", "keygen", "-o", "k.pub"]);
    assert!(e.contains("k.pub"), "{e}");
    assert!(!dir.join("k.pub").exists());
}

fn replace_once(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = hay
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern not in the bundle");
    let mut out = hay.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}
