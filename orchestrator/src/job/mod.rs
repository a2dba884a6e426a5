//! The job: its YAML (config.rs) resolved against the Hugging Face cache (hub.rs), the plan of
//! shards (plan.rs), what of it changes pixels (fingerprint.rs), the devices it runs on
//! (devices.rs), the disk it needs (disk.rs), and its `partitions:` (partition.rs),
//! `evaluate:` (evaluation.rs) and `notify:` (notify.rs). Nothing here touches the out dir's files.
pub(crate) mod config;
pub(crate) mod devices;
pub(crate) mod disk;
pub(crate) mod evaluation;
pub(crate) mod fingerprint;
pub(crate) mod hub;
pub(crate) mod notify;
pub(crate) mod partition;
pub(crate) mod plan;
pub(crate) mod shared_gpus;
