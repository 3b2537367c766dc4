use anyhow::Result;
use clap::{Parser, Subcommand};

/// enforcer: Kubernetes NetworkPolicy and runtime guards enforced in the kernel with eBPF.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detach everything an instance attached and remove its pins.
    Uninstall {
        /// The instance's bpffs directory.
        #[arg(long, default_value = "/sys/fs/bpf/enforcer")]
        bpffs: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Uninstall { bpffs } => {
            let n = enforcer::bpf::uninstall(&bpffs)?;
            println!("removed {n} pinned objects from {}", bpffs.display());
        }
    }
    Ok(())
}
