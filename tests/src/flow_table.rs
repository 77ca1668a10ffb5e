//! Parsers of the tracer's per-flow tables (`retrans --top` snapshots and the `=== summary`
//! table), as text ([`parse_top_text`], [`find_summary_table`]) and as JSON ([`parse_top_json`]).

use crate::{Value, parse_rfc3339_utc, tracer_proc::parse_json_lines};

/// One row of a per-flow table (`--top` snapshot or `=== summary`): the eight columns
/// `SRC DST SRC_POD DST_POD RETRANS RESETS STATE LAST_SEEN` (pods `-` when unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRow {
    pub src: String,
    pub dst: String,
    pub src_pod: String,
    pub dst_pod: String,
    pub retransmits: u64,
    pub resets: u64,
    pub state: String,
    pub last_seen: String,
}

/// One per-flow table: its title (`=== TS  N flows` or `=== summary TS  N flows`) and rows.
#[derive(Clone, Debug)]
pub struct FlowTable {
    pub title: String,
    pub ts_nanos: i128,
    pub is_summary: bool,
    pub rows: Vec<FlowRow>,
}

impl FlowTable {
    /// The row of (src, dst), if any (panics if there are two).
    pub fn row(&self, src: &str, dst: &str) -> Option<&FlowRow> {
        let rows: Vec<&FlowRow> = self.rows.iter().filter(|r| r.src == src && r.dst == dst).collect();
        assert!(rows.len() <= 1, "table {:?} has {} rows for {src} -> {dst}: {rows:?}", self.title, rows.len());
        rows.first().copied()
    }
}

/// Parses a table title: (is_summary, ts nanos, N). `N flows` (or `1 flow`).
pub fn parse_flow_table_title(line: &str) -> Option<(bool, i128, usize)> {
    let rest = line.strip_prefix("=== ")?;
    let (summary, rest) = match rest.strip_prefix("summary ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [ts, n, what] = words[..] else { return None };
    let n: usize = n.parse().ok()?;
    if !(what == "flows" || (what == "flow" && n == 1)) {
        return None;
    }
    Some((summary, parse_rfc3339_utc(ts)?, n))
}

/// Parses one 8-column row.
pub fn parse_flow_row(line: &str) -> Option<FlowRow> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let [src, dst, src_pod, dst_pod, retrans, resets, state, last_seen] = w[..] else { return None };
    Some(FlowRow {
        src: src.into(),
        dst: dst.into(),
        src_pod: src_pod.into(),
        dst_pod: dst_pod.into(),
        retransmits: retrans.parse().ok()?,
        resets: resets.parse().ok()?,
        state: state.into(),
        last_seen: last_seen.into(),
    })
}

/// Parses the table whose title is `lines[i]`: title, a header starting with `SOURCE`, then
/// exactly N rows. Returns the table and the index after it; panics naming the bad line.
pub fn parse_flow_table_at(lines: &[&str], i: usize) -> (FlowTable, usize) {
    let ctx = || lines.join("\n");
    let (is_summary, ts_nanos, n) = parse_flow_table_title(lines[i])
        .unwrap_or_else(|| panic!("line {:?} is not a table title `=== [summary ]<RFC3339 UTC>  <N> flows`; all:\n{}", lines[i], ctx()));
    let header = lines.get(i + 1).copied().unwrap_or_default();
    assert!(header.starts_with("SOURCE"), "after title {:?}: want a header starting with SOURCE, got {header:?}; all:\n{}", lines[i], ctx());
    let mut rows = Vec::new();
    for k in 0..n {
        let l = lines.get(i + 2 + k).copied().unwrap_or_default();
        let row = parse_flow_row(l).unwrap_or_else(|| {
            panic!(
                "table {:?} promises {n} rows; row {k} {l:?} is not `SRC DST SRC_POD DST_POD RETRANS RESETS STATE LAST_SEEN`; all:\n{}",
                lines[i],
                ctx()
            )
        });
        rows.push(row);
    }
    (FlowTable { title: lines[i].to_string(), ts_nanos, is_summary, rows }, i + 2 + n)
}

/// The `--top` text output: nothing but tables (blank lines between them allowed).
pub fn parse_top_text(lines: &[String]) -> Vec<FlowTable> {
    let lines: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let (t, next) = parse_flow_table_at(&lines, i);
        out.push(t);
        i = next;
    }
    out
}

/// The last `=== summary` table among other output (stream stdout, or stderr in JSON mode).
pub fn find_summary_table(lines: &[&str]) -> Option<FlowTable> {
    let lines: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
    let i = lines.iter().rposition(|l| l.starts_with("=== summary"))?;
    Some(parse_flow_table_at(&lines, i).0)
}

/// The `--top -o json` output: one object per line,
/// `{"snapshot": TS, "final": BOOL, "flows": [{"src","dst","src_pod","dst_pod","retransmits","resets","state","last_seen"}]}`;
/// pods null become `-` as in the text table.
pub fn parse_top_json(lines: &[String]) -> Vec<FlowTable> {
    parse_json_lines(lines)
        .iter()
        .map(|o| {
            let ts = o["snapshot"].as_str().unwrap_or_else(|| panic!("top JSON {o}: snapshot must be a timestamp string"));
            let ts_nanos = parse_rfc3339_utc(ts).unwrap_or_else(|| panic!("top JSON {o}: snapshot {ts:?} is not RFC 3339 UTC"));
            let is_summary = o["final"].as_bool().unwrap_or_else(|| panic!("top JSON {o}: final must be a bool"));
            let flows = o["flows"].as_array().unwrap_or_else(|| panic!("top JSON {o}: flows must be an array"));
            let rows = flows
                .iter()
                .map(|f| {
                    let s = |k: &str| f[k].as_str().unwrap_or_else(|| panic!("top JSON flow {f}: {k} must be a string")).to_string();
                    let pod = |k: &str| match &f[k] {
                        Value::Null => "-".to_string(),
                        Value::String(p) if p.split('/').count() == 2 => p.clone(),
                        v => panic!("top JSON flow {f}: {k} must be namespace/name or null, got {v}"),
                    };
                    let n = |k: &str| f[k].as_u64().unwrap_or_else(|| panic!("top JSON flow {f}: {k} must be an unsigned integer"));
                    FlowRow {
                        src: s("src"),
                        dst: s("dst"),
                        src_pod: pod("src_pod"),
                        dst_pod: pod("dst_pod"),
                        retransmits: n("retransmits"),
                        resets: n("resets"),
                        state: s("state"),
                        last_seen: s("last_seen"),
                    }
                })
                .collect();
            FlowTable { title: format!("json snapshot {ts}"), ts_nanos, is_summary, rows }
        })
        .collect()
}
