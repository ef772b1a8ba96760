//! One reward rule written in Rust, Python and JavaScript (plugins/examples/),
//! built into three components against the same WIT, must score every
//! completion identically through the plugin host: same totals and components
//! bit for bit, same per-item errors, same refusals of bad configs. The native
//! Rust rule is the oracle; the hand-written edge cases pin the oracle itself.
//!
//! Needs target/plugins/example-{rust,python,js}-reward.wasm: run
//! `scripts/build-example-plugins.sh` (scripts/build-plugins.sh runs it).
//!
//! The benchmark (ignored by default) prints completions/s and start-up cost:
//! `cargo test --release -p lmmhost-tests --test polyglot -- --ignored --nocapture`
//! (`LMMHOST_BENCH_N` sets the number of completions, default 20000).

use std::path::PathBuf;
use std::time::Instant;

use example_rust_reward::NumericR1;
use lmmhost_bundle::{check_wit_compatible, inspect_component, World, HOST_WIT_VERSION};
use lmmhost_plugin_host::{
    ItemOutcome, OnError, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions,
};
use lmmhost_sdk::reward::score_completions;
use lmmhost_sdk::{Completion, ContentPart, Message, Reward, Sample, Score};

/// (language, component name); the file is target/plugins/<name>.wasm.
const PLUGINS: [(&str, &str); 3] = [
    ("rust", "example-rust-reward"),
    ("python", "example-python-reward"),
    ("js", "example-js-reward"),
];

fn plugin_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("LMMHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-example-plugins.sh (Python via componentize-py, \
         JavaScript via componentize-js; needs python3 and npm)",
        path.display()
    );
    path
}

fn completion(id: &str, response: &str, answer: Option<&str>) -> Completion {
    Completion {
        sample: Sample {
            id: id.to_string(),
            messages: vec![Message {
                role: "user".into(),
                content: vec![ContentPart::Text("What is the number?".into())],
            }],
            answer: answer.map(str::to_string),
            metadata: vec![],
        },
        response: response.to_string(),
        response_tokens: response.split_whitespace().count() as u32,
    }
}

/// What the default config must give: (format, accuracy) or the error text.
enum Expect {
    Score(f64, f64),
    Error(&'static str),
}

/// Edge cases with their expected result under the default config.
fn edge_cases() -> Vec<(Completion, Expect)> {
    use Expect::{Error, Score as S};
    let long = format!("<think>{}</think><answer>3</answer>", "a".repeat(20_000));
    let cases: Vec<(&str, String, Option<&str>, Expect)> = vec![
        (
            "plain",
            "<think>6*7=42</think><answer>42</answer>".into(),
            Some("42"),
            S(0.5, 1.0),
        ),
        ("empty", "".into(), Some("1"), S(0.0, 0.0)),
        (
            "empty-tags",
            "<think></think><answer></answer>".into(),
            Some("0"),
            S(0.5, 0.0),
        ),
        (
            "dot",
            "<think>a</think><answer>.</answer>".into(),
            Some("0"),
            S(0.5, 0.0),
        ),
        (
            "neg-zero",
            "<think>a</think><answer>-0.000</answer>".into(),
            Some("+0"),
            S(0.5, 1.0),
        ),
        // Exact decimals: a float comparison would call these equal.
        (
            "tiny-diff",
            "<think>a</think><answer>1.0000000000000000001</answer>".into(),
            Some("1"),
            S(0.5, 0.0),
        ),
        (
            "big-diff",
            "<think>a</think><answer>123456789012345678901234567891</answer>".into(),
            Some("123456789012345678901234567890"),
            S(0.5, 0.0),
        ),
        (
            "float-noise",
            "<think>a</think><answer>0.30000000000000004</answer>".into(),
            Some("0.3"),
            S(0.5, 0.0),
        ),
        (
            "nested",
            "<answer><answer>42</answer></answer>".into(),
            Some("42"),
            S(0.0, 1.0),
        ),
        (
            "reversed",
            "</answer>42<answer>".into(),
            Some("42"),
            S(0.0, 0.0),
        ),
        (
            "extra-close",
            "<think>a</think><answer>1</answer></answer>".into(),
            Some("1"),
            S(0.0, 1.0),
        ),
        (
            "answer-in-think",
            "<think><answer>1</answer></think><answer>2</answer>".into(),
            Some("2"),
            S(0.0, 1.0),
        ),
        // Vertical tab and form feed are not whitespace for this rule.
        (
            "vtab-gap",
            "<think>a</think>\x0b<answer>5</answer>".into(),
            Some("5"),
            S(0.0, 1.0),
        ),
        (
            "formfeed",
            "<think>a</think><answer>\x0c5</answer>".into(),
            Some("5"),
            S(0.5, 0.0),
        ),
        (
            "arabic-digits",
            "<think>a</think><answer>٤٢</answer>".into(),
            Some("42"),
            S(0.5, 0.0),
        ),
        (
            "hex",
            "<think>a</think><answer>0x2A</answer>".into(),
            Some("42"),
            S(0.5, 0.0),
        ),
        (
            "infinity",
            "<think>a</think><answer>Infinity</answer>".into(),
            Some("1"),
            S(0.5, 0.0),
        ),
        (
            "underscore",
            "<think>a</think><answer>1_000</answer>".into(),
            Some("1000"),
            S(0.5, 0.0),
        ),
        (
            "half",
            "<think>a</think><answer>.5</answer>".into(),
            Some("0.50"),
            S(0.5, 1.0),
        ),
        (
            "plus",
            "<think>a</think><answer>+7</answer>".into(),
            Some("7."),
            S(0.5, 1.0),
        ),
        (
            "crlf",
            "<think>x</think> \t\r\n <answer>\r\n-12.5\t</answer>\r\n".into(),
            Some("-12.50"),
            S(0.5, 1.0),
        ),
        ("long", long, Some("3"), S(0.5, 1.0)),
        (
            "inner-space",
            "<think>a</think><answer>4 2</answer>".into(),
            Some("42"),
            S(0.5, 0.0),
        ),
        (
            "double-minus",
            "<think>a</think><answer>--4</answer>".into(),
            Some("-4"),
            S(0.5, 0.0),
        ),
        (
            "letter",
            "<think>a</think><answer>e</answer>".into(),
            Some("2.718"),
            S(0.5, 0.0),
        ),
        (
            "lead-space",
            " <think>a</think><answer>0</answer>".into(),
            Some("-0"),
            S(0.5, 1.0),
        ),
        (
            "bom",
            "\u{feff}<think>a</think><answer>1</answer>".into(),
            Some("1"),
            S(0.0, 1.0),
        ),
        (
            "emoji",
            "<think>🤔 π ≈ 3.14159</think><answer>3.14159</answer>".into(),
            Some("3.14159"),
            S(0.5, 1.0),
        ),
        (
            "exp-ref",
            "<think>a</think><answer>5.</answer>".into(),
            Some(".5e1"),
            Error("sample `exp-ref`: reference answer `.5e1` is not a number"),
        ),
        (
            "no-ref",
            "<think>a</think><answer>1</answer>".into(),
            None,
            Error("sample `no-ref`: no reference answer"),
        ),
        (
            "ü`x`",
            "<think>a</think><answer>1</answer>".into(),
            Some(""),
            Error("sample `ü`x``: reference answer `` is not a number"),
        ),
        (
            "nbsp-ref",
            "<think>a</think><answer>4</answer>".into(),
            Some("\u{a0}4"),
            Error("sample `nbsp-ref`: reference answer `\u{a0}4` is not a number"),
        ),
    ];
    cases
        .into_iter()
        .map(|(id, response, answer, expect)| (completion(id, &response, answer), expect))
        .collect()
}

/// Numeric references x answer spellings x response shapes: 1620 completions.
fn generated() -> Vec<Completion> {
    let refs = [
        "42",
        "-3.5",
        "0.25",
        "1000",
        "0",
        "3.14159",
        "-7",
        "0.1",
        "123456789012345678901234567890",
    ];
    let forms = |r: &str| -> Vec<String> {
        let (sign, digits) = match r.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("", r),
        };
        let last = r.chars().last().and_then(|c| c.to_digit(10)).unwrap_or(0);
        vec![
            r.to_string(),
            format!(" {r}\n"),
            if sign == "-" {
                format!("\u{2212}{digits}")
            } else {
                format!("+{r}")
            },
            format!("{sign}00{digits}"),
            if r.contains('.') {
                format!("{r}000")
            } else {
                format!("{r}.000")
            },
            format!("{}{}", &r[..r.len() - 1], (last + 1) % 10),
            if sign == "-" {
                digits.to_string()
            } else {
                format!("-{r}")
            },
            format!("{r} cm"),
            format!("\\boxed{{{r}}}"),
            r.chars()
                .map(|c| {
                    c.to_digit(10)
                        .map_or(c, |d| char::from_u32(0xFF10 + d).unwrap_or(c))
                })
                .collect(),
            format!("{r}e0"),
            format!("\u{a0}{r}"),
            format!("\t{r}\r\n"),
            format!("{r}."),
            format!("{r},"),
        ]
    };
    let shapes: [fn(&str) -> String; 12] = [
        |a| format!("<think>Let me work it out.</think><answer>{a}</answer>"),
        |a| format!("\n  <think>step\nby step</think>\n<answer>{a}</answer>  \n"),
        |a| format!("<think>t</think>Therefore:<answer>{a}</answer>"),
        |a| format!("<answer>{a}</answer>"),
        |a| format!("The answer is {a}."),
        |a| format!("<think>first guess 9</think><answer>9</answer><answer>{a}</answer>"),
        |a| format!("<THINK>t</THINK><ANSWER>{a}</ANSWER>"),
        |a| format!("\u{feff}<think>t</think><answer>{a}</answer>"),
        |a| format!("<think>🤔 π ≈ 3.14159, 日本語, مرحبا</think>\u{3000}<answer>{a}</answer>"),
        |a| format!("<think>t</think><answer>{a}</answer>\u{3000}"),
        |a| format!("<think>t</think>\r\n<answer>{a}"),
        |a| format!("<think>t<answer>{a}</answer></think>"),
    ];
    let mut out = Vec::new();
    for r in refs {
        let references = [
            r.to_string(),
            format!(" {r}\t"),
            if r.contains('.') {
                format!("{r}0")
            } else {
                format!("{r}.0")
            },
        ];
        for (f, answer) in forms(r).iter().enumerate() {
            for (s, shape) in shapes.iter().enumerate() {
                let k = out.len();
                out.push(completion(
                    &format!("gen-{k}-{r}-f{f}-s{s}"),
                    &shape(answer),
                    Some(&references[k % references.len()]),
                ));
            }
        }
    }
    out
}

/// The completion as componentize-js 0.23 hands it to JavaScript: one leading
/// U+FEFF removed from every string.
fn strip_leading_bom(c: &Completion) -> Completion {
    let strip = |s: &str| s.strip_prefix('\u{feff}').unwrap_or(s).to_string();
    let mut c = c.clone();
    c.sample.id = strip(&c.sample.id);
    c.sample.answer = c.sample.answer.as_deref().map(strip);
    c.response = strip(&c.response);
    c
}

/// Bit-exact comparison of one plugin outcome with the native rule's result.
fn same(got: &ItemOutcome, want: &Result<Score, String>) -> bool {
    let bits = |s: &Score| -> (u64, Vec<(String, u64)>) {
        (
            s.total.to_bits(),
            s.components
                .iter()
                .map(|(k, v)| (k.clone(), v.to_bits()))
                .collect(),
        )
    };
    match (got, want) {
        (ItemOutcome::Scored(a), Ok(b)) => bits(a) == bits(b),
        (ItemOutcome::Failed { error, .. }, Err(e)) => error == e,
        _ => false,
    }
}

fn runtime_with_cache(dir: &tempfile::TempDir) -> PluginRuntime {
    PluginRuntime::new(RuntimeOptions {
        cache_dir: Some(dir.path().to_path_buf()),
    })
    .unwrap()
}

fn start(runtime: &PluginRuntime, name: &str, config: &str) -> anyhow::Result<RewardPlugin> {
    let mut spec = PluginSpec::from_file(name, &plugin_path(name), config)?;
    spec.on_error = OnError::Zero;
    spec.limits.instances = Some(2);
    RewardPlugin::new(runtime, spec)
}

#[test]
fn each_component_reports_the_same_contract_facts() {
    for (lang, name) in PLUGINS {
        let path = plugin_path(name);
        let bytes = std::fs::read(&path).unwrap();
        let facts = inspect_component(&bytes).unwrap();
        println!(
            "{lang:<7} {name:<22} world={} wit={} size={} exports={:?}",
            facts
                .world
                .map(|w| w.name().to_string())
                .unwrap_or_default(),
            facts.wit_version.as_deref().unwrap_or("-"),
            facts.size_bytes,
            facts.exports
        );
        assert_eq!(facts.world, Some(World::Reward), "{lang}");
        // The Rust example is built with the SDK (the newest contract); the
        // Python and JavaScript examples against 0.1.0, which the host keeps
        // serving: the equality tests below cover both host adapters.
        let version = if lang == "rust" {
            HOST_WIT_VERSION
        } else {
            "0.1.0"
        };
        assert_eq!(facts.wit_version.as_deref(), Some(version), "{lang}");
        assert!(
            facts
                .exports
                .iter()
                .any(|e| *e == format!("lmmhost:plugin/reward@{version}")),
            "{lang}: exports {:?}",
            facts.exports
        );
        assert!(
            facts
                .imports
                .iter()
                .any(|i| *i == format!("lmmhost:plugin/types@{version}")),
            "{lang}: imports {:?}",
            facts.imports
        );
        assert_eq!(facts.size_bytes, bytes.len() as u64, "{lang}");
        check_wit_compatible(&facts).unwrap_or_else(|e| panic!("{lang}: {e}"));
    }
}

#[test]
fn rust_python_and_javascript_score_identically() {
    let edge = edge_cases();
    let rule = NumericR1::new("").unwrap();
    for (c, expect) in &edge {
        let got = rule.score(c);
        match (expect, &got) {
            (Expect::Score(f, a), Ok(s)) => assert_eq!(
                (s.total, s.components.clone()),
                (f + a, vec![("format".into(), *f), ("accuracy".into(), *a)]),
                "native oracle, case {}",
                c.sample.id
            ),
            (Expect::Error(e), Err(g)) => assert_eq!(g, e, "native oracle, case {}", c.sample.id),
            _ => panic!("native oracle, case {}: got {got:?}", c.sample.id),
        }
    }
    let mut batch: Vec<Completion> = edge.into_iter().map(|(c, _)| c).collect();
    batch.extend(generated());

    // The set must exercise every branch, or agreement would prove little.
    let native: Vec<Result<Score, String>> = score_completions(&rule, &batch);
    let count = |p: &dyn Fn(&Result<Score, String>) -> bool| native.iter().filter(|r| p(r)).count();
    let formats = count(&|r| matches!(r, Ok(s) if s.components[0].1 > 0.0));
    let accurate = count(&|r| matches!(r, Ok(s) if s.components[1].1 > 0.0));
    let errors = count(&|r| r.is_err());
    println!(
        "{} completions: {formats} well formatted, {accurate} correct, {errors} errors",
        batch.len()
    );
    assert!(batch.len() >= 1500 && formats >= 200 && accurate >= 200 && errors >= 4);
    assert!(batch.len() - formats >= 500 && batch.len() - accurate >= 500);

    // componentize-js 0.23 decodes every string it hands to JavaScript with
    // a BOM-stripping UTF-8 decoder: one leading U+FEFF is gone before the
    // rule runs. The JavaScript component is therefore held to the native rule
    // applied to that view of the batch; the pin below fails the day the
    // tool-chain stops doing it (then drop `js_view`).
    let js_view: Vec<Completion> = batch.iter().map(strip_leading_bom).collect();
    let changed = native
        .iter()
        .zip(score_completions(&rule, &js_view))
        .filter(|(a, b)| *a != b)
        .count();
    println!("{changed} completions score differently once a leading U+FEFF is stripped");
    assert!(
        changed >= 100,
        "the BOM cases no longer exercise the difference"
    );

    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime_with_cache(&cache);
    let js = start(&runtime, "example-js-reward", "").unwrap();
    let probe = [completion(
        "p",
        "\u{feff}<think>a</think><answer>1</answer>",
        Some("1"),
    )];
    assert_eq!(
        js.score_batch(&probe).unwrap(),
        vec![ItemOutcome::Scored(Score {
            total: 1.5,
            components: vec![("format".into(), 0.5), ("accuracy".into(), 1.0)]
        })],
        "componentize-js now keeps a leading U+FEFF: compare JavaScript with `native` directly"
    );
    drop(js);
    let configs = [
        "",
        "format_weight = 0.25\naccuracy_weight = 2",
        "# weights as integers, comments\nformat_weight = 1 # one\naccuracy_weight = 3\n",
        "accuracy_weight = 1e-1\nformat_weight = -0.5\n",
        "format_weight = 1_000.5\n",
    ];
    for config in configs {
        let rule = NumericR1::new(config).unwrap();
        let native = score_completions(&rule, &batch);
        let native_js = score_completions(&rule, &js_view);
        for (lang, name) in PLUGINS {
            let plugin = start(&runtime, name, config)
                .unwrap_or_else(|e| panic!("{lang} with config {config:?}: {e:#}"));
            let outcomes = plugin.score_batch(&batch).unwrap();
            assert_eq!(outcomes.len(), batch.len(), "{lang}");
            let want = if lang == "js" { &native_js } else { &native };
            let bad: Vec<String> = outcomes
                .iter()
                .zip(want)
                .zip(&batch)
                .filter(|((got, want), _)| !same(got, want))
                .map(|((got, want), c)| {
                    format!(
                        "  {}: response {:?}: got {got:?}, native {want:?}",
                        c.sample.id, c.response
                    )
                })
                .collect();
            assert!(
                bad.is_empty(),
                "{lang} differs from the native rule on {} of {} completions (config {config:?}):\n{}",
                bad.len(),
                batch.len(),
                bad[..bad.len().min(10)].join("\n")
            );
        }
    }

    // Bad configs are refused by every language, naming the key.
    let bad_configs = [
        ("format_weigth = 1", "format_weigth"),
        ("format_weight = \"high\"", "format_weight"),
        ("format_weight = true", "format_weight"),
        ("accuracy_weight = nan", "accuracy_weight"),
        ("accuracy_weight = inf", "accuracy_weight"),
    ];
    for (config, key) in bad_configs {
        assert!(
            NumericR1::new(config).is_err(),
            "native accepted {config:?}"
        );
        for (lang, name) in PLUGINS {
            let err = match start(&runtime, name, config) {
                Ok(_) => panic!("{lang} accepted the bad config {config:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains("init rejected the config") && err.contains(key),
                "{lang}, config {config:?}: {err}"
            );
        }
    }
}

/// Completions for the benchmark: R1 format, `chars` characters, numeric
/// answers, a third of them wrong.
fn bench_batch(n: usize, chars: usize) -> Vec<Completion> {
    (0..n)
        .map(|i| {
            let reference = format!("{}.{}", i % 1000, i % 7);
            let given = if i % 3 == 0 {
                format!("-{reference}")
            } else {
                reference.clone()
            };
            let tail = format!("</think><answer>{given}</answer>");
            let mut body = format!("<think>Step {i}: add the terms, then check the sign. ");
            while body.len() + tail.len() < chars {
                body.push_str("We simplify and verify the result. ");
            }
            body.truncate(chars.saturating_sub(tail.len()).max(8));
            completion(&format!("bench-{i}"), &(body + &tail), Some(&reference))
        })
        .collect()
}

#[test]
#[ignore]
fn bench_three_languages() {
    let n: usize = std::env::var("LMMHOST_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let threads = 2;
    let batch = bench_batch(n, 300);
    let rule = NumericR1::new("").unwrap();
    let t = Instant::now();
    let native: Vec<Result<Score, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = batch
            .chunks(n.div_ceil(threads))
            .map(|part| s.spawn(|| part.iter().map(|c| rule.score(c)).collect::<Vec<_>>()))
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let native_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("{n} completions of 300 characters, {threads} instances/threads");
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>14} {:>8}",
        "plugin", "size", "cold load", "cached load", "completions/s", "vs native"
    );
    for (lang, name) in PLUGINS {
        let size = std::fs::metadata(plugin_path(name)).unwrap().len();
        // Cold: compile into an empty cache + instantiate; cached: load + instantiate.
        let cache = tempfile::tempdir().unwrap();
        let runtime = runtime_with_cache(&cache);
        let t = Instant::now();
        drop(start(&runtime, name, "").unwrap());
        let cold = t.elapsed();
        let t = Instant::now();
        let plugin = start(&runtime, name, "").unwrap();
        let cached = t.elapsed();
        plugin.score_batch(&batch[..n.min(256)]).unwrap();
        let t = Instant::now();
        let out = plugin.score_batch(&batch).unwrap();
        let rate = n as f64 / t.elapsed().as_secs_f64();
        assert!(
            out.iter().zip(&native).all(|(g, w)| same(g, w)),
            "{lang}: scores differ from native"
        );
        println!(
            "{lang:<8} {:>8.1}MB {:>10.0}ms {:>10.1}ms {:>14.0} {:>7.2}x",
            size as f64 / 1e6,
            cold.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            rate,
            rate / native_rate
        );
    }
    println!(
        "{:<8} {:>10} {:>12} {:>12} {native_rate:>14.0}",
        "native", "-", "-", "-"
    );
}
