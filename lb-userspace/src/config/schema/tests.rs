use super::*;

fn errors(text: &str) -> Vec<String> {
    match deserialize(text) {
        Ok(checked) => checked.errors.iter().map(ToString::to_string).collect(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

const BASE: &str = "interfaces = [\"eth0\"]\n";

#[test]
fn every_schema_error_at_once_with_path_place_and_words() {
    let text = format!(
        "{BASE}colour = \"blue\"\n\
         [[vip]]\nname = \"web\"\naddress = \"198.19.0.10:80\"\ntable_size = \"251\"\n\
         [[vip.backend]]\naddress = \"198.18.10.2\"\n\
         [[vip.backend]]\naddress = \"198.18.10.3\"\nwieght = 3\n\
         [[vip]]\naddress = \"198.19.0.10:81\"\n"
    );
    let got = errors(&text);
    let want = [
        "line 2, column 1: colour: unknown key `colour` (expected one of `instance`,",
        "line 6, column 14: vip[0].table_size: expected an integer (no quotes), found the \
         string \"251\"",
        "line 11, column 1: vip[0].backend[1].wieght: unknown key `wieght`; did you mean \
         `weight`? (expected one of `address`, `weight`, `health_check`)",
        "line 12, column 1: vip[1].name: missing key `name`, which this table needs",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (got, want) in got.iter().zip(want) {
        assert!(got.starts_with(want), "{got}\ndoes not start with\n{want}");
    }
}

#[test]
fn a_wrong_required_key_is_reported_once() {
    let got = errors(&format!(
        "{BASE}[[vip]]\nname = 5\naddress = \"198.19.0.10:80\"\n[[vip]]\nname = \"b\"\n\
         address = \"198.19.0.10:81\"\ncolour = 1\n"
    ));
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("line 3, column 8: vip[0].name: expected a string"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("line 8, column 1: vip[1].colour: unknown key"),
        "{got:#?}"
    );
}

#[test]
fn a_misspelled_top_level_key_gets_a_suggestion_and_the_valid_keys() {
    let got = errors(&format!("{BASE}conntrak_entries = 5\n"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("did you mean `conntrack_entries`?") && got[0].contains("`instance`"),
        "{got:?}"
    );
}

#[test]
fn inline_table_and_list_element_errors_are_placed() {
    let text =
        "interfaces = [\"eth0\", 7]\n[[vip]]\nname = \"web\"\naddress = \"198.19.0.10:80\"\n\
                backend = [{ address = \"198.18.10.2\", weigth = 2 }]\n";
    let got = errors(text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("line 1, column 23: interfaces[1]: expected a string"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("line 5, column ") && got[1].contains("vip[0].backend[0].weigth"),
        "{got:#?}"
    );
}

#[test]
fn broken_toml_is_one_syntax_error() {
    let got = errors("interfaces = [\"eth0\"\n");
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn a_good_file_passes() {
    assert!(errors(BASE).is_empty());
}

#[test]
fn schema_and_validation_errors_come_in_one_run() {
    let text = "interfaces = [\"eth0\"]\nconntrak_entries = 5\nxdp_mode = \"fast\"\n\
                [[vip]]\nname = \"web\"\naddress = \"198.19.0.10:80\"\nweight = 2\n";
    let e = crate::config::Config::parse(text).unwrap_err();
    let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with("line 2, column 1: conntrak_entries: unknown key"),
        "{shown:#?}"
    );
    assert!(
        shown[1].starts_with("line 3, column 12: xdp_mode:"),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with("line 7, column 1: vip[0].weight: unknown key"),
        "{shown:#?}"
    );
}

/// Every one-byte deletion and every one-byte substitution of a full config: the schema
/// check answers (a config or errors with positions inside the text), never panics, and
/// never loops (each round takes a key out, so at most `MAX_ERRORS` rounds).
#[test]
fn mutated_configs_always_get_an_answer() {
    let good = crate::config::tests::GOOD;
    let (mut answered, mut tried) = (0usize, 0usize);
    for i in 0..good.len() {
        if !good.is_char_boundary(i) || !good.is_char_boundary(i + 1) {
            continue;
        }
        for replacement in ["", "x", "=", "[", "\"", "1", "\n"] {
            tried += 1;
            let text = format!("{}{replacement}{}", &good[..i], &good[i + 1..]);
            match crate::config::Config::parse(&text) {
                Ok(_) => answered += 1,
                Err(e) => {
                    assert!(!e.0.is_empty(), "no error for {text:?}");
                    let lines = text.lines().count().max(1);
                    for error in &e.0 {
                        if let Some(line) = error.line() {
                            assert!(line <= lines + 1, "{error} beyond the text:\n{text}");
                        }
                    }
                    answered += 1;
                }
            }
        }
    }
    assert_eq!(answered, tried);
    assert!(tried > 4000, "{tried} mutations");
}
