#![no_main]
//! Runs the MLSD fact and `LIST` parsers over every line of the data and checks format-then-parse round-trips.
use ftps_proto::codec::{
    format_fact_line, format_unix_list_line, parse_fact_line, parse_list_line, EntryKind, Timeval,
};
use libfuzzer_sys::fuzz_target;

const NOW: Timeval = Timeval {
    year: 2024,
    month: 3,
    day: 1,
    hour: 12,
    minute: 0,
    second: 0,
    millisecond: None,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Some(entry) = parse_fact_line(line) {
            // Facts that cannot be written are dropped, but the line always reads back with the same name.
            let formatted = format_fact_line(&entry);
            let again = parse_fact_line(&formatted).expect("a formatted fact line parses");
            assert_eq!(again.name, entry.name);
            // Formatting is stable: a second round gives the same entry.
            assert_eq!(
                parse_fact_line(&format_fact_line(&again)).as_ref(),
                Some(&again)
            );
        }
        if let Some(entry) = parse_list_line(line, NOW) {
            let formatted = format_unix_list_line(&entry, NOW);
            let again = parse_list_line(&formatted, NOW);
            let simple_name =
                !entry.name.contains(" -> ") && entry.name != "." && entry.name != "..";
            if simple_name && matches!(entry.kind, EntryKind::File | EntryKind::Dir) {
                let again = again.expect("a formatted LIST line parses");
                assert_eq!(again.name, entry.name);
                assert_eq!(again.kind, entry.kind);
                assert_eq!(again.size, entry.size.or(Some(0)));
            }
        }
    }
});
