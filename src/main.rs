use clap::Parser;

use mlcompute::cli::{self, Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match cli::run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line with the reason, as CLI users expect; the chain gives the cause.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
