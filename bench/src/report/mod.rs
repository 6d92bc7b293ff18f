//! The report in its three forms: terminal table, Markdown document, SVG chart.

pub mod analysis;
pub mod machine;
pub mod markdown;
pub mod svg;
pub mod table;
