//! Istio's CEL expressions (access-log filters, metric tag values), parsed where the config
//! is read so that a bad one is refused with its field, before any proxy sees it.

use std::sync::Arc;

/// Longer expressions are refused: they are config, and the parser's cost grows with them.
pub const MAX_LEN: usize = 4096;

/// A parsed expression with its source, shared by every request of a config version.
#[derive(Clone)]
pub struct Expression {
    pub source: Arc<str>,
    pub program: Arc<cel::Program>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Expression {
    fn eq(&self, o: &Expression) -> bool {
        self.source == o.source
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error("the expression is empty")]
    Empty,
    #[error("the expression is {0} bytes; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("not a CEL expression: {0}")]
    Syntax(String),
}

pub fn parse(source: &str) -> Result<Expression, ExpressionError> {
    if source.trim().is_empty() {
        return Err(ExpressionError::Empty);
    }
    if source.len() > MAX_LEN {
        return Err(ExpressionError::TooLong(source.len()));
    }
    let program = cel::Program::compile(source).map_err(|e| {
        let first = e.errors.first().map_or_else(
            || e.to_string(),
            |p| format!("{} at column {}", p.msg, p.pos.1 + 1),
        );
        ExpressionError::Syntax(first)
    })?;
    Ok(Expression {
        source: source.into(),
        program: Arc::new(program),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_examples_parse_and_bad_ones_say_where() {
        for ok in [
            "response.code >= 400",
            "request.headers['x-user'] == 'jason'",
            "string(destination.port)",
            "'end-user' in request.headers ? request.headers['end-user'] : 'anonymous'",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(parse(" "), Err(ExpressionError::Empty));
        assert!(matches!(
            parse(&"1+".repeat(3000)),
            Err(ExpressionError::TooLong(_))
        ));
        let e = parse("response.code >=").unwrap_err().to_string();
        assert!(e.starts_with("not a CEL expression:"), "{e}");
        let deep = format!("{}1{}", "(".repeat(2000), ")".repeat(2000));
        assert!(parse(&deep).is_err());
    }
}
