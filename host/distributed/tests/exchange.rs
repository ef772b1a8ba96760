//! `Distributed::exchange` on 2 and 3 Gloo ranks: every rank gets every
//! rank's value in rank order, and the store holds no more keys after many
//! exchanges than before them.

mod common;

use common::on_ranks;
use lmmhost_distributed::Distributed;

#[test]
fn exchanges_give_every_value_and_leave_no_keys_behind() {
    for world in [2, 3] {
        let results = on_ranks(world, |dist: &Distributed| {
            let store = dist.store().expect("a store");
            dist.barrier()?;
            let before = store.num_keys()?;
            let mut got = Vec::new();
            for i in 0..25 {
                // Values of different sizes on each rank, one of them empty.
                let value = vec![dist.rank() as u8; (i * 7 + dist.rank() * 3) % 40];
                got.push(dist.exchange(&format!("test/{i}"), &value)?);
            }
            // Every rank has read every exchange once all have passed this.
            dist.barrier()?;
            let after = store.num_keys()?;
            let mut left = Vec::new();
            for i in 0..25 {
                let keys = (0..dist.world_size()).map(|r| r.to_string());
                for k in keys.chain(["read".to_string()]) {
                    let key = format!("test/{i}/{k}");
                    if store.check(&key)? {
                        left.push(key);
                    }
                }
            }
            Ok((before, after, got, left))
        });
        for (rank, (before, after, got, left)) in results.iter().enumerate() {
            assert!(
                left.is_empty(),
                "world {world} rank {rank}: {left:?} left behind"
            );
            // The process groups' own keys (their count varies by a key or
            // so as their set-up finishes).
            assert!(
                after <= before,
                "world {world} rank {rank}: {before} keys before, {after} after"
            );
            for (i, values) in got.iter().enumerate() {
                let want: Vec<Vec<u8>> = (0..world)
                    .map(|r| vec![r as u8; (i * 7 + r * 3) % 40])
                    .collect();
                assert_eq!(values, &want, "world {world} rank {rank} exchange {i}");
            }
        }
    }
}

#[test]
fn a_world_of_one_exchanges_with_itself() {
    let single = Distributed::single(tch::Device::Cpu);
    assert_eq!(single.exchange("x", b"abc").unwrap(), vec![b"abc".to_vec()]);
}
