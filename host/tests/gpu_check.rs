//! scripts/gpu-pack.sh and scripts/gpu-check.sh on the CPU: the pack holds
//! everything the check needs (it runs from the pack folder alone, with the
//! packed stripped binary) and every section of the check runs with the tiny
//! models and writes its figures into the report.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}\n{all}");
    all
}

#[test]
fn packed_gpu_check_runs_every_section_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    let log = ok(Command::new(repo().join("scripts/gpu-pack.sh"))
        .arg("--out")
        .arg(&pack)
        .env("LMMHOST", env!("CARGO_BIN_EXE_lmmhost")));
    assert!(log.contains("packed:"), "{log}");
    let bytes: u64 = walk(&pack)
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(bytes < 60 << 20, "{bytes} bytes");

    // From the pack, not the repository: nothing outside it is needed.
    let report = dir.path().join("report");
    ok(Command::new(pack.join("scripts/gpu-check.sh"))
        .args(["--tiny", "--out"])
        .arg(&report)
        .current_dir(dir.path())
        .env("GPU_CHECK_DEVICE", "cpu")
        .env_remove("LMMHOST"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("gpu-check.json")).unwrap())
            .unwrap();
    let steps = v["steps"].as_array().unwrap();
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name} in {v}"))
    };
    assert!(v["environment"].as_str().unwrap().contains("device: cpu"));
    for (name, dtype) in [("parity-cpu-f32", "f32"), ("parity-cpu-bf16", "bf16")] {
        let s = step(name);
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["figures"]["dtype"], dtype);
        let cases = s["figures"]["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 9, "{s}");
        for c in cases {
            assert_eq!(c["ok"], true, "{c}");
            assert!(c["max_diff"].as_f64().unwrap() < c["bound"].as_f64().unwrap());
        }
    }
    let g = step("grpo-1");
    assert_eq!(g["status"], "ok", "{g}");
    let f = &g["figures"];
    assert_eq!(f["dtype"], "bf16");
    assert_eq!(f["prompt_length/mean"], 100.0);
    assert_eq!(f["response_length/mean"], 4.0);
    assert_eq!(f["prompts"], 2);
    assert_eq!(f["group_size"], 2);
    for key in [
        "time/step",
        "time/rollout",
        "time/logprobs",
        "throughput/tokens_per_s",
        "throughput/gen_tokens_per_s",
        "peak_memory_mb",
    ] {
        assert!(f[key].as_f64().unwrap() > 0.0, "{key}: {f}");
    }
    // This binary has model.lora: its step runs (not "unsupported").
    let l = step("grpo-lora");
    assert_eq!(l["status"], "ok", "{l}");
    assert!(l["figures"]["time/step"].as_f64().unwrap() > 0.0, "{l}");
    assert!(
        l["figures"]["peak_memory_mb"].as_f64().unwrap() > 0.0,
        "{l}"
    );
    // This binary has model.activation_checkpointing: its step runs too.
    let s = step("grpo-checkpointing");
    assert_eq!(s["status"], "ok", "{s}");
    assert!(s["figures"]["time/step"].as_f64().unwrap() > 0.0, "{s}");
    // Two steps on one rank through a process group of one (Gloo here):
    // the collectives moved bytes and the first step's loss is the plain one's.
    let o = step("one-rank-compare");
    assert_eq!(o["status"], "ok", "{o}");
    let rows = o["figures"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{o}");
    for r in rows {
        assert!(r["dist/bytes"].as_f64().unwrap() > 0.0, "{r}");
    }
    let md = std::fs::read_to_string(report.join("gpu-check.md")).unwrap();
    for heading in [
        "## Forward parity",
        "## GRPO steps",
        "| grpo-1 | ok |",
        "## One rank with a process group",
    ] {
        assert!(md.contains(heading), "{heading}\n{md}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
