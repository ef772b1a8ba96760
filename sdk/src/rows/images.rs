//! Image references in rows: paths resolved against the data file's
//! directory and checked against the grants, embedded bytes decoded.

use super::kind;
use crate::{base64_decode, ContentPart, ImageSource};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// Removes `.` and resolves `..` lexically (no file system access: the
/// sandbox may not let us see the path, and the check must not depend on it).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The config's `image_roots`, normalized, each checked to be a directory
/// the loader can see. The sandbox shows only what the host granted, so a
/// root missing here was not granted (or does not exist).
pub fn image_roots(roots: &[String]) -> Result<Vec<PathBuf>, String> {
    roots
        .iter()
        .map(|r| {
            let p = normalize(Path::new(r));
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => Ok(p),
                Ok(_) => Err(format!("image root {r} is not a directory")),
                Err(e) => Err(format!(
                    "image root {r} is not visible to the loader ({e}); list it in the dataset's `images` so the host grants it read-only"
                )),
            }
        })
        .collect()
}

/// An image reference from a row, made absolute (relative to the data
/// file's directory `base`, `file://` stripped) and checked to lie inside a
/// granted directory, so the error comes with file and line rather than
/// later from the host's sandbox.
pub fn resolve_image(reference: &str, base: &Path, granted: &[PathBuf]) -> Result<String, String> {
    let r = reference.strip_prefix("file://").unwrap_or(reference);
    if r.is_empty() {
        return Err("empty image path".into());
    }
    if r.contains("://") {
        return Err(format!(
            "image `{reference}`: only local files are supported"
        ));
    }
    let p = Path::new(r);
    let abs = normalize(&if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    });
    if !granted.iter().any(|d| abs.starts_with(d)) {
        return Err(format!(
            "image `{reference}` ({}) is outside the granted directories; list the directory that holds the images in the dataset's `images` (image roots)",
            abs.display()
        ));
    }
    abs.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("image `{reference}`: path is not valid UTF-8"))
}

/// The row's image list, consumed in order by placeholders and bare image parts.
pub(super) struct Images<'a> {
    list: Vec<Value>,
    next: usize,
    field: &'a str,
    base: PathBuf,
    granted: &'a [PathBuf],
}

impl<'a> Images<'a> {
    pub fn new(list: Vec<Value>, field: &'a str, base: PathBuf, granted: &'a [PathBuf]) -> Self {
        Images {
            list,
            next: 0,
            field,
            base,
            granted,
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn next(&mut self) -> Result<ImageSource, String> {
        let i = self.next;
        let v = self.list.get(i).cloned().ok_or_else(|| {
            format!(
                "more image placeholders than entries in `{}` ({})",
                self.field,
                self.list.len()
            )
        })?;
        self.next += 1;
        self.source(&v)
            .map_err(|e| format!("`{}[{i}]`: {e}", self.field))
    }

    /// Every image not taken yet, in order.
    pub fn rest(&mut self) -> Result<Vec<ContentPart>, String> {
        let mut out = Vec::with_capacity(self.list.len());
        while self.next < self.list.len() {
            out.push(ContentPart::Image(self.next()?));
        }
        Ok(out)
    }

    /// A path string (`file://`, `data:...;base64,` accepted) or an object
    /// with `bytes` (base64 text or a list of byte values; wins when not
    /// null, as in the Hugging Face `Image` struct) or `path`.
    pub fn source(&self, v: &Value) -> Result<ImageSource, String> {
        match v {
            Value::String(s) => self.source_text(s),
            Value::Object(o) => {
                if let Some(b) = o.get("bytes").filter(|b| !b.is_null()) {
                    return bytes_of(b).map(ImageSource::Bytes);
                }
                for k in ["path", "image", "url"] {
                    if let Some(Value::String(s)) = o.get(k) {
                        return self.source_text(s);
                    }
                }
                Err("an image object needs `bytes` or `path`".into())
            }
            other => Err(format!(
                "an image must be a path string or an object, got {}",
                kind(other)
            )),
        }
    }

    fn source_text(&self, s: &str) -> Result<ImageSource, String> {
        if let Some(rest) = s.strip_prefix("data:") {
            let (_, data) = rest
                .split_once(";base64,")
                .ok_or("a `data:` image URL must be base64 (`data:<type>;base64,...`)")?;
            return base64_decode(data)
                .map(ImageSource::Bytes)
                .map_err(|e| format!("image data URL: {e}"));
        }
        resolve_image(s, &self.base, self.granted).map(ImageSource::Path)
    }
}

fn bytes_of(b: &Value) -> Result<Vec<u8>, String> {
    match b {
        Value::String(s) => base64_decode(s.trim()).map_err(|e| format!("image `bytes`: {e}")),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| format!("image `bytes`: {x} is not a byte value 0..=255"))
            })
            .collect(),
        other => Err(format!(
            "image `bytes` must be base64 text or a list of bytes, got {}",
            kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_resolve_and_stay_inside_grants() {
        let g = vec![PathBuf::from("/data/set")];
        let base = Path::new("/data/set/train");
        assert_eq!(
            resolve_image("img/1.png", base, &g).unwrap(),
            "/data/set/train/img/1.png"
        );
        assert_eq!(
            resolve_image("../img/1.png", base, &g).unwrap(),
            "/data/set/img/1.png"
        );
        assert_eq!(
            resolve_image("file:///data/set/x.jpg", base, &g).unwrap(),
            "/data/set/x.jpg"
        );
        let e = resolve_image("../../../etc/passwd", base, &g).unwrap_err();
        assert!(e.contains("/etc/passwd") && e.contains("outside"), "{e}");
        assert!(resolve_image("/data/settle/x.png", base, &g).is_err());
        assert!(resolve_image("http://x/y.png", base, &g)
            .unwrap_err()
            .contains("local"));
        assert!(resolve_image("", base, &g).unwrap_err().contains("empty"));
    }
}
