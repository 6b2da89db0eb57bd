//! The control plane: one folder per controller. Controllers share only `runtime`, `contract`
//! and `api`; none imports another.

pub mod batch;
pub mod environment;
pub mod online;
pub mod training;
