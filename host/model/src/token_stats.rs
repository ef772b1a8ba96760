//! Per-token log-probabilities and entropies of given targets, computed from
//! final hidden states and the output projection chunk by chunk over the
//! sequence, so that at most one chunk of `[B, n, V]` logits exists at a time.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::lm::Entropy;

/// Log-probabilities of `targets` `[B, L]` given final hidden states `[B, L, H]`
/// and the output projection, chunk by chunk over the sequence so that at most
/// one chunk of logits exists at a time. Half-precision models never build a
/// float32 logits tensor that autograd keeps: the log-sum-exp comes from a
/// detached float32 copy, and its gradient (`-softmax`) enters through a
/// zero-valued term on the model-dtype logits.
///
/// `temperature` divides the logits first (1: the model's own distribution):
/// the training log-probs and entropies of a policy that samples at
/// temperature T are those of `softmax(logits / T)`.
pub fn chunked_token_stats(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    entropy: Entropy,
    temperature: f64,
) -> Result<(Tensor, Option<Tensor>)> {
    // ~64M logits per chunk (256 MB in float32).
    token_stats_in_chunks(hidden, lm_head, targets, 1 << 26, entropy, temperature)
}

/// [`chunked_token_stats`] with at most `budget` logits per chunk.
fn token_stats_in_chunks(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    budget: i64,
    entropy: Entropy,
    temperature: f64,
) -> Result<(Tensor, Option<Tensor>)> {
    if !(temperature.is_finite() && temperature > 0.0) {
        bail!("the log-prob temperature must be a finite number > 0, got {temperature}");
    }
    let (b, l) = (hidden.size()[0], hidden.size()[1]);
    if targets.size() != [b, l] {
        bail!(
            "targets must be [B, L] = [{b}, {l}], got {:?}",
            targets.size()
        );
    }
    let vocab = lm_head.size()[0];
    let chunk = (budget / (b * vocab).max(1)).clamp(1, l.max(1));
    let targets = targets.to_kind(Kind::Int64);
    let mut out = Vec::new();
    let mut entropies = Vec::new();
    let mut start = 0;
    while start < l {
        let n = chunk.min(l - start);
        let logits = hidden.narrow(1, start, n).linear(lm_head, None::<&Tensor>);
        let logits = if temperature == 1.0 {
            logits
        } else {
            logits / temperature
        };
        if entropy != Entropy::Off {
            // H = lse - sum(p * z), in float32.
            let h = || {
                let z = logits.to_kind(Kind::Float);
                let lse = z.logsumexp([-1].as_slice(), true);
                let p = (&z - &lse).exp();
                (lse - (p * &z).sum_dim_intlist([-1].as_slice(), true, Kind::Float)).squeeze_dim(-1)
            };
            entropies.push(if entropy == Entropy::Detached {
                tch::no_grad(h)
            } else {
                h()
            });
        }
        let t = targets.narrow(1, start, n).unsqueeze(-1);
        let lp = if logits.kind() == Kind::Float || logits.kind() == Kind::Double {
            let lse = logits.logsumexp([-1].as_slice(), true);
            (logits.gather(-1, &t, false) - lse)
                .squeeze_dim(-1)
                .to_kind(Kind::Float)
        } else {
            let lse = tch::no_grad(|| logits.to_kind(Kind::Float).logsumexp([-1].as_slice(), true));
            let mut lp = logits.gather(-1, &t, false).to_kind(Kind::Float) - &lse;
            if logits.requires_grad() {
                let p = tch::no_grad(|| {
                    (logits.to_kind(Kind::Float) - &lse)
                        .exp()
                        .to_kind(logits.kind())
                });
                let s = (p * &logits).sum_dim_intlist([-1].as_slice(), true, Kind::Float);
                lp = &lp - (&s - s.detach());
            }
            lp.squeeze_dim(-1)
        };
        out.push(lp);
        start += n;
    }
    let entropy = (entropy != Entropy::Off).then(|| Tensor::cat(&entropies, 1));
    Ok((Tensor::cat(&out, 1), entropy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn reference(hidden: &Tensor, head: &Tensor, t: &Tensor) -> Tensor {
        // Logits in the model dtype, softmax in float32: the exact quantity.
        let logits = hidden.linear(head, None::<&Tensor>).to_kind(Kind::Float);
        logits
            .log_softmax(-1, Kind::Float)
            .gather(-1, &t.unsqueeze(-1), false)
            .squeeze_dim(-1)
    }

    #[test]
    fn chunked_entropy_matches_the_softmax_entropy_and_its_gradient() {
        let opts = (Kind::Float, Device::Cpu);
        let (h, head, t) = crate::checkpoint::seeded(4, || {
            let h = Tensor::randn([2, 5, 8], opts);
            let head = Tensor::randn([30, 8], opts);
            (
                h,
                head,
                Tensor::randint(30, [2, 5], (Kind::Int64, Device::Cpu)),
            )
        });
        let h = h.set_requires_grad(true);
        let (_, ent) =
            token_stats_in_chunks(&h, &head, &t, 2 * 30 * 2, Entropy::Differentiable, 1.0).unwrap();
        let ent = ent.unwrap();
        let h2 = h.detach().set_requires_grad(true);
        let lp = h2
            .linear(&head, None::<&Tensor>)
            .log_softmax(-1, Kind::Float);
        let want = -(lp.exp() * &lp).sum_dim_intlist([-1].as_slice(), false, Kind::Float);
        let d = (&ent - &want).abs().max().double_value(&[]);
        assert!(d < 1e-5, "entropy differs by {d}");
        ent.sum(Kind::Float).backward();
        want.sum(Kind::Float).backward();
        let dg = (h.grad() - h2.grad()).abs().max().double_value(&[]);
        assert!(dg < 1e-5, "entropy gradient differs by {dg}");
        // Detached: same values, no autograd history.
        let (_, det) =
            token_stats_in_chunks(&h, &head, &t, 1 << 20, Entropy::Detached, 1.0).unwrap();
        let det = det.unwrap();
        assert!(!det.requires_grad());
        assert!((&det - &want).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn chunked_logprobs_match_log_softmax_values_and_gradients() {
        let opts = (Kind::Float, Device::Cpu);
        let (h, head, t) = crate::checkpoint::seeded(3, || {
            let h = Tensor::randn([2, 7, 16], opts);
            let head = Tensor::randn([50, 16], opts);
            (
                h,
                head,
                Tensor::randint(50, [2, 7], (Kind::Int64, Device::Cpu)),
            )
        });
        for kind in [Kind::Float, Kind::BFloat16] {
            let hk = h.to_kind(kind).detach().set_requires_grad(true);
            let headk = head.to_kind(kind);
            // 2 * 50 * 3 logits per chunk: chunks of 3, 3 and 1 positions.
            let (lp, _) = token_stats_in_chunks(&hk, &headk, &t, 300, Entropy::Off, 1.0).unwrap();
            assert_eq!(lp.kind(), Kind::Float);
            let href = hk.detach().set_requires_grad(true);
            let want = reference(&href, &headk, &t);
            let d = (&lp - &want).abs().max().double_value(&[]);
            assert!(d < 1e-4, "{kind:?}: value differs by {d}");
            // bf16: the gradient's softmax term is rounded to bf16.
            let tol = if kind == Kind::Float { 1e-5 } else { 2e-2 };
            lp.sum(Kind::Float).backward();
            want.sum(Kind::Float).backward();
            let g = hk.grad().to_kind(Kind::Float);
            let gref = href.grad();
            let scale = gref.abs().max().double_value(&[]);
            let dg = (&g - &gref).abs().max().double_value(&[]) / scale;
            assert!(
                dg < 2.0 * tol,
                "{kind:?}: gradient differs by {dg} (relative)"
            );
        }
    }

    /// At temperature T the log-probs and entropies are those of
    /// `softmax(logits / T)` (how a policy sampling at T is trained).
    #[test]
    fn temperature_divides_the_logits() {
        let opts = (Kind::Float, Device::Cpu);
        let (h, head, t) = crate::checkpoint::seeded(5, || {
            let h = Tensor::randn([2, 4, 8], opts);
            let head = Tensor::randn([20, 8], opts);
            (
                h,
                head,
                Tensor::randint(20, [2, 4], (Kind::Int64, Device::Cpu)),
            )
        });
        let (lp, ent) = token_stats_in_chunks(&h, &head, &t, 40, Entropy::Detached, 0.7).unwrap();
        let logp = (h.linear(&head, None::<&Tensor>) / 0.7).log_softmax(-1, Kind::Float);
        let want = logp.gather(-1, &t.unsqueeze(-1), false).squeeze_dim(-1);
        assert!((&lp - &want).abs().max().double_value(&[]) < 1e-5);
        let want_ent = -(logp.exp() * &logp).sum_dim_intlist([-1].as_slice(), false, Kind::Float);
        assert!((ent.unwrap() - want_ent).abs().max().double_value(&[]) < 1e-5);
        // And differs from T = 1 (the test would pass without the division otherwise).
        let (lp1, _) = token_stats_in_chunks(&h, &head, &t, 40, Entropy::Off, 1.0).unwrap();
        assert!((&lp1 - &want).abs().max().double_value(&[]) > 1e-2);
        assert!(token_stats_in_chunks(&h, &head, &t, 40, Entropy::Off, 0.0).is_err());
    }
}
