//! Plain-text tables: a header row, columns padded to their widest cell, two spaces apart.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// For numbers, so magnitudes line up.
    Right,
}

#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

const GAP: &str = "  ";

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Missing cells render empty; extra cells are ignored.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every line ends in a newline and has no trailing spaces.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|row| width(cell(row, i)))
                    .chain([width(self.columns[i].0)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (&(_, align), &w)) in self.columns.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                let text = cell(row, i);
                let pad = w - width(text);
                match align {
                    Align::Left => {
                        line.push_str(text);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(text);
                    }
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let key_width = pairs.iter().map(|(k, _)| width(k) + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let key = format!("{key}:");
        let _ = writeln!(out, "{key:<key_width$} {value}");
    }
    out
}

/// Display width; the cells are addresses, names and numbers, so characters are close enough.
fn width(s: &str) -> usize {
    s.chars().count()
}

fn cell(row: &[String], i: usize) -> &str {
    row.get(i).map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_and_aligns_numbers() {
        let mut table = Table::new(&[
            ("VIP", Align::Left),
            ("FLOWS", Align::Right),
            ("STATE", Align::Left),
        ]);
        table.row(vec!["web".into(), "12345678".into(), "up".into()]);
        table.row(vec!["dns-internal".into(), "3".into(), "draining".into()]);
        assert_eq!(
            table.render(),
            "VIP              FLOWS  STATE\n\
             web           12345678  up\n\
             dns-internal         3  draining\n"
        );
    }

    #[test]
    fn no_trailing_spaces_and_short_rows() {
        let mut table = Table::new(&[("A", Align::Left), ("LONG HEADER", Align::Left)]);
        table.row(vec!["xyz".into()]);
        assert_eq!(table.render(), "A    LONG HEADER\nxyz\n");
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let table = Table::new(&[("CLIENT", Align::Left), ("AGE", Align::Right)]);
        assert!(table.is_empty());
        assert_eq!(table.render(), "CLIENT  AGE\n");
    }

    #[test]
    fn key_values_align() {
        let text = key_values(&[
            ("phase", "serving".into()),
            ("pin dir", "/sys/fs/bpf/sluice".into()),
        ]);
        assert_eq!(text, "phase:   serving\npin dir: /sys/fs/bpf/sluice\n");
    }
}
