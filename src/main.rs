//! Command line and start-up only.

fn main() -> anyhow::Result<()> {
    Ok(())
}
