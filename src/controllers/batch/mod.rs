//! Batch endpoints: the BatchEndpoint controller (invoke URI, default deployment), the
//! BatchDeployment controller (resolves the scoring setup) and the BatchJob controller (plans the
//! mini-batches and runs the driver Job).

pub mod deployment;
pub mod endpoint;
pub mod job;
