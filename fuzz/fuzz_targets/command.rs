//! Parses arbitrary bytes as a command line; whatever parses must format back to itself.
#![no_main]
use ftps_proto::codec::parse_command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_command(data) {
        Ok(command) => {
            let wire = command.to_string();
            assert_eq!(
                parse_command(wire.as_bytes()),
                Ok(command.clone()),
                "wire form {wire:?}"
            );
            assert!(wire.starts_with(command.verb()));
            let _ = (format!("{command:?}"), command.masked().to_string());
        }
        Err(error) => {
            let code = error.reply_code().get();
            assert!(matches!(code, 500 | 501 | 522), "reply code {code}");
            let _ = error.to_string();
        }
    }
});
