//! kubectl-style output: aligned columns with a header, or the data as JSON or YAML.

use serde::Serialize;

/// `-o` for commands that print tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// Columns separated by at least three spaces, as kubectl prints them.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Prints `data` as JSON or YAML, or calls `table` for the table form.
pub fn print<T: Serialize>(
    output: Output,
    data: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Table => println!("{}", table()),
        Output::Json => println!("{}", serde_json::to_string_pretty(data)?),
        Output::Yaml => print!("{}", serde_norway::to_string(data)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let t = super::render(
            &["NAME", "HOSTS"],
            &[
                vec!["reviews".into(), "[reviews]".into()],
                vec!["a".into(), "[b]".into()],
            ],
        );
        assert_eq!(t, "NAME      HOSTS\nreviews   [reviews]\na         [b]");
    }
}
