//! The `tinfer` command line: parse, dispatch (src/cli/), map errors to exit codes.
//! Exit codes: 0 success, 1 usage error, 2 bad model or input, 3 GPU error, 130 Ctrl-C; a write
//! to a closed pipe ends the process quietly (SIGPIPE), as it ends `cat`.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod serve;

use cli::args::Cli;

fn main() -> ExitCode {
    cli::signals::default_sigpipe();
    // Vulkan loaders and Mesa complain on stderr when XDG_RUNTIME_DIR is unset (headless
    // machines, CI); give them a private directory so only tinfer's own messages remain.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("tinfer-xdg-{}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_ok() {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; usage mistakes exit 1.
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<cli::signals::Interrupted>() => ExitCode::from(cli::signals::EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("error: {e:#}");
            let device = e.chain().any(|c| c.is::<tinfer::gpu::context::DeviceError>());
            let usage = e.chain().any(|c| c.is::<cli::args::Usage>());
            ExitCode::from(if device {
                3
            } else if usage {
                1
            } else {
                2
            })
        }
    }
}
