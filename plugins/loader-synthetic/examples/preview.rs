//! Prints a few samples of a loader-synthetic config, natively (images as their
//! size and cell letters), e.g.
//! `cargo run --release -p loader-synthetic --example preview -- 'task = "shapes-count"' 3`

use lmmhost_sdk::{ContentPart, ImageSource, Loader};
use loader_synthetic::SyntheticLoader;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let config = args
        .next()
        .unwrap_or_else(|| "task = \"arithmetic\"".to_owned());
    let n: u64 = match args.next() {
        Some(a) => a.parse().map_err(|e| format!("sample count {a:?}: {e}"))?,
        None => 3,
    };
    let (loader, info) = SyntheticLoader::open(&config, &[])?;
    for note in &info.notes {
        println!("# {note}");
    }
    for i in 0..n.min(info.len) {
        let s = loader.get(i)?;
        println!("[{}] answer={:?}", s.id, s.answer.as_deref().unwrap_or(""));
        for m in &s.messages {
            let parts: Vec<String> = m
                .content
                .iter()
                .map(|p| match p {
                    ContentPart::Text(t) => t.clone(),
                    ContentPart::Image(ImageSource::Bytes(b)) => format!("<png {} bytes>", b.len()),
                    ContentPart::Image(ImageSource::Path(p)) => format!("<image {p}>"),
                })
                .collect();
            println!("  {}: {}", m.role, parts.join(" "));
        }
        let meta: Vec<String> = s.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  metadata: {}", meta.join(" "));
    }
    Ok(())
}
