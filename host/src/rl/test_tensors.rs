//! Small tensors written by hand, for the tests of the algorithms.

use tch::{Kind, Tensor};

/// A `[rows, cols]` float tensor.
pub fn t2(rows: &[&[f64]]) -> Tensor {
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&x| x as f32))
        .collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

/// Every value of `t`, row after row.
pub fn vals(t: &Tensor) -> Vec<f64> {
    let t = t.to_kind(Kind::Double).flatten(0, -1);
    Vec::<f64>::try_from(&t).unwrap()
}

/// Asserts equal lengths and values within 1e-5.
pub fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}
