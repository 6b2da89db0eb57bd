//! `mlcompute operator`: run the controllers.

pub async fn run(settings: crate::operator::settings::Settings) -> anyhow::Result<()> {
    crate::operator::run::run(settings).await?;
    Ok(())
}
