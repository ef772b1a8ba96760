//! The reinforcement-learning algorithms as plain functions, each file with
//! the settings it reads from the experiment's `[grpo]` section: advantages,
//! the clipped policy loss and its aggregation, the KL estimators and where
//! the penalty goes, PAD, DAPO dynamic sampling, scalar schedules (learning
//! rate, entropy bonus), pass@k. Nothing here knows about the trainer.

pub mod advantage;
pub mod dynamic_sampling;
pub mod kl;
pub mod pad;
pub mod passk;
pub mod policy_loss;
pub mod schedules;
#[cfg(test)]
mod test_tensors;
