//! Command-line entry of `xenstore-inspect` (see the library for the commands).

use std::process::ExitCode;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if arguments.len() == 1 && matches!(arguments[0].as_str(), "help" | "--help" | "-h") {
        println!("{}", xenstore_inspect::USAGE);
        return ExitCode::SUCCESS;
    }
    let (image_path, command, rest) = match arguments.as_slice() {
        [image, command, rest @ ..] => (image, command, rest),
        _ => {
            eprintln!("{}", xenstore_inspect::USAGE);
            return ExitCode::from(2);
        }
    };
    let image = match std::fs::read(image_path) {
        Ok(image) => image,
        Err(error) => {
            eprintln!("xenstore-inspect: cannot read {image_path}: {error}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match xenstore_inspect::run(&image, command, rest, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xenstore-inspect: {error}");
            ExitCode::FAILURE
        }
    }
}
