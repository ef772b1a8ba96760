//! Small values of every rank, on every rank, through the rendezvous store:
//! a step's metrics, evaluation answers. The keys are deleted once every rank
//! has read them, so a long run does not grow the store.

use anyhow::{Context, Result};

use crate::Distributed;

impl Distributed {
    /// Every rank's `value`, in rank order. `name` must be the same on every
    /// rank and unique to this exchange among the store's keys. The last rank
    /// to finish reading deletes the exchange's keys.
    pub fn exchange(&self, name: &str, value: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Some(store) = self.store() else {
            return Ok(vec![value.to_vec()]);
        };
        let world = self.world_size();
        let key = |rank: usize| format!("{name}/{rank}");
        store.set(&key(self.rank()), value)?;
        let values = (0..world)
            .map(|r| {
                store
                    .get(&key(r))
                    .with_context(|| format!("rank {} waiting for rank {r}'s {name}", self.rank()))
            })
            .collect::<Result<Vec<_>>>()?;
        let read = format!("{name}/read");
        if store.add(&read, 1)? == world as i64 {
            for r in 0..world {
                store.delete_key(&key(r))?;
            }
            store.delete_key(&read)?;
        }
        Ok(values)
    }
}
