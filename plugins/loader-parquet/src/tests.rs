use crate::ParquetLoader;
use lmmhost_sdk::{ContentPart, ImageSource, Loader};

const PNG: [u8; 11] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3];

fn fixtures() -> String {
    format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"))
}
fn fixture(name: &str) -> String {
    format!("{}/{name}", fixtures())
}
fn text(t: &str) -> ContentPart {
    ContentPart::Text(t.to_owned())
}
fn bytes(b: &[u8]) -> ContentPart {
    ContentPart::Image(ImageSource::Bytes(b.to_vec()))
}

#[test]
fn easyr1_layout_with_image_structs_across_row_groups() {
    // The fixtures directory is granted (easyr1 sorts first), so the row's
    // image path next to the file is inside the grant.
    let (l, info) = ParquetLoader::open("", &[fixtures()]).unwrap();
    assert_eq!(info.len, 11);
    assert_eq!(info.skipped_rows, 0);
    // Out of order: crosses row groups both ways (the loader caches one row group).
    let s3 = l.get(3).unwrap();
    let s0 = l.get(0).unwrap();
    let s2 = l.get(2).unwrap();
    let s1 = l.get(1).unwrap();
    assert_eq!(s0.messages[0].role, "user");
    assert_eq!(
        s0.messages[0].content,
        vec![bytes(&PNG), text("What is x?")]
    );
    assert_eq!(s0.answer.as_deref(), Some("3"));
    assert_eq!(s0.id, "easyr1.parquet:1");
    assert_eq!(
        s0.metadata,
        vec![("difficulty".to_string(), "1".to_string())]
    );
    assert_eq!(s1.messages[0].content, vec![text("Solve 2+2.")]);
    assert_eq!(
        s2.messages[0].content,
        vec![
            ContentPart::Image(ImageSource::Path(format!("{}/imgs/a.png", fixtures()))),
            text(" vs "),
            bytes(&PNG[..4]),
            text(": which is larger?"),
        ],
        "bytes win over path; a path-only image is resolved against the file's directory"
    );
    assert_eq!(s3.answer.as_deref(), Some("12"));
    assert!(l.get(11).unwrap_err().contains("out of range"));
    // Granted alone, the file's directory is not granted: the image path is refused.
    // (`open` validates every row, so it is `open` that fails.)
    let e = ParquetLoader::open("", &[fixture("easyr1.parquet")])
        .err()
        .unwrap();
    assert!(
        e.contains("easyr1.parquet: row 3") && e.contains("outside the granted"),
        "{e}"
    );
}

#[test]
fn verl_layout_prompt_list_and_ground_truth() {
    let (l, info) = ParquetLoader::open("", &[fixture("verl.parquet")]).unwrap();
    assert_eq!(info.len, 3);
    let s = l.get(0).unwrap();
    assert_eq!(s.messages.len(), 2);
    assert_eq!(s.messages[0].role, "system");
    assert_eq!(s.messages[0].content, vec![text("Think step by step.")]);
    assert_eq!(
        s.messages[1].content,
        vec![bytes(&PNG), text("Find the angle.")]
    );
    assert_eq!(s.answer.as_deref(), Some("60"));
    assert_eq!(
        s.metadata,
        vec![("data_source".to_string(), "geo3k".to_string())]
    );
    assert_eq!(l.get(1).unwrap().answer.as_deref(), Some("42"));
}

#[test]
fn verl_placeholder_mismatch_is_error_or_skipped() {
    // Row 2 has two <image> placeholders and one image. (Not named *.parquet so
    // the directory test does not pick it up.)
    let err = ParquetLoader::open("", &[fixture("verl-bad.ignored")])
        .err()
        .unwrap();
    assert!(
        err.contains(
            "verl-bad.ignored: row 2 (row group 0, row 2): `prompt` have 2 image placeholders"
        ),
        "{err}"
    );
    let (l, info) =
        ParquetLoader::open("skip_bad_rows = true", &[fixture("verl-bad.ignored")]).unwrap();
    assert_eq!((info.len, info.skipped_rows), (1, 1));
    assert_eq!(l.get(0).unwrap().answer.as_deref(), Some("42"));
    let (l, _) = ParquetLoader::open("", &[fixture("verl.parquet")]).unwrap();
    assert_eq!(
        l.get(2).unwrap().messages[0].content,
        vec![bytes(&PNG), bytes(&PNG), text("Compare.")]
    );
}

#[test]
fn lz4_and_brotli_files_and_directory_grant() {
    for f in ["plain-lz4.parquet", "plain-brotli.parquet"] {
        let (l, info) = ParquetLoader::open("", &[fixture(f)]).unwrap();
        assert_eq!(info.len, 2, "{f}");
        assert_eq!(l.get(1).unwrap().answer.as_deref(), Some("5"), "{f}");
    }
    // Directory: all *.parquet sorted (easyr1 4 + brotli 2 + lz4 2 + verl 3).
    let cfg = "skip_bad_rows = true";
    let (l, info) = ParquetLoader::open(cfg, &[fixtures()]).unwrap();
    assert_eq!(info.len + info.skipped_rows, 11);
    assert_eq!(l.get(4).unwrap().id, "plain-brotli.parquet:1");
}

#[test]
fn bad_rows_name_file_and_row() {
    // Force the EasyR1 format on the verl file: every row lacks `problem`.
    let err = ParquetLoader::open("format = \"easyr1\"", &[fixture("verl.parquet")])
        .err()
        .unwrap();
    assert!(
        err.contains("verl.parquet: row 1 (row group 0, row 1): missing field `problem`"),
        "{err}"
    );
    let (_, info) =
        ParquetLoader::open("format = \"easyr1\"\nskip_bad_rows = true", &[fixtures()]).unwrap();
    // easyr1 4 + brotli 2 + lz4 2 usable; the 3 verl rows lack `problem`.
    assert_eq!((info.len, info.skipped_rows), (8, 3));
    assert!(
        info.notes[0].contains("verl.parquet: row 1"),
        "{:?}",
        info.notes
    );

    let err = ParquetLoader::open("", &[format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))])
        .err()
        .unwrap();
    assert!(
        err.contains("Cargo.toml: not a readable Parquet file"),
        "{err}"
    );
    let err = ParquetLoader::open("nope = 1", &[fixture("verl.parquet")])
        .err()
        .unwrap();
    assert!(
        err.contains("loader-parquet config") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn configurable_columns_and_template() {
    let cfg = r#"
format = "verl"
prompt_key = "prompt"
ground_truth_key = "reward_model.style"
instruction_suffix = " Put the answer in \\boxed{}."
"#;
    let (l, _) = ParquetLoader::open(cfg, &[fixture("verl.parquet")]).unwrap();
    let s = l.get(1).unwrap();
    assert_eq!(s.answer.as_deref(), Some("rule"));
    assert_eq!(
        s.messages[0].content,
        vec![text("What is 7*6? Put the answer in \\boxed{}.")]
    );
}

#[test]
fn zstd_files_are_read() {
    // zstd-sys is compiled for wasm32-wasip2 by clang (see Cargo.toml).
    let (l, info) = ParquetLoader::open("", &[fixture("plain-zstd.ignored")]).unwrap();
    assert_eq!(info.len, 2);
    assert_eq!(l.get(1).unwrap().answer.as_deref(), Some("5"));
}

#[test]
fn unwrap_answer_on_verl_ground_truth() {
    // (`unwrap_answer` itself is tested in the SDK's rows module.)
    let (l, _) = ParquetLoader::open("unwrap_answer = true", &[fixture("verl.parquet")]).unwrap();
    assert_eq!(l.get(0).unwrap().answer.as_deref(), Some("60"));
}

/// Timing on a large file: `LMMHOST_PQ_BENCH=file.parquet cargo test --release -p loader-parquet -- --ignored --nocapture`.
#[test]
#[ignore = "needs a large Parquet file named by LMMHOST_PQ_BENCH"]
fn bench_open_and_get() {
    let Ok(path) = std::env::var("LMMHOST_PQ_BENCH") else {
        return;
    };
    let t = std::time::Instant::now();
    let (l, info) = ParquetLoader::open("", &[path]).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    for i in 0..info.len {
        l.get(i).unwrap();
    }
    let seq_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let n = 2000.min(info.len);
    for k in 0..n {
        // A fixed stride visits row groups in scattered order.
        l.get((k * 7919) % info.len).unwrap();
    }
    let rnd_s = t.elapsed().as_secs_f64();
    println!(
        "rows {} open {open_s:.3}s, in order {:.1} us/row, scattered {:.1} us/row",
        info.len,
        seq_s * 1e6 / info.len as f64,
        rnd_s * 1e6 / n as f64
    );
}
