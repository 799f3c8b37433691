use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = streamrec::cli::Cli::parse();
    match streamrec::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(streamrec::cli::exit_code(&err))
        }
    }
}
