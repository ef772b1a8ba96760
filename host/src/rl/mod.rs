//! The reinforcement-learning algorithms, one file each: advantages, the
//! clipped policy loss with KL and aggregation, PAD, DAPO dynamic sampling,
//! scalar schedules (learning rate, entropy bonus), pass@k.

pub mod advantage;
pub mod dynamic_sampling;
pub mod pad;
pub mod passk;
pub mod policy_loss;
pub mod schedules;
