//! The data plane: the router (scoring and invoke traffic) and the batch driver (runs inside batch
//! job Pods). It reads what controllers write only through `contract`; it never imports a
//! controller.

pub mod batch_driver;
pub mod router;
