//! The operator process: settings, leader election, the health and metrics endpoint, and `run`,
//! which starts every controller.

pub mod http;
pub mod leader;
pub mod run;
pub mod settings;
