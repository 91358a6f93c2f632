//! Oracle test for stream–table joins: for random inputs (skewed keys, duplicate keys on both
//! sides, NULL keys, decimal keys and values), the streaming result in random micro-batches
//! equals DataFusion's batch join over the same finite input, exactly, as multisets.

use datafusion::prelude::SessionContext;
use velostream::replay::Replay;

mod oracle;
use oracle::{register_json_table, sorted_json_rows, Rng};

const STREAM_COLUMNS: &str = "k VARCHAR, d DECIMAL(8,2), v BIGINT";
const TABLE_COLUMNS: &str = "k VARCHAR, d DECIMAL(8,2), w BIGINT";

fn key(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "null".into(),
        1..=4 => "\"hot\"".into(),
        n => format!("\"k{}\"", n + rng.below(3)),
    }
}

fn decimal(rng: &mut Rng) -> String {
    format!("\"{}.{}\"", rng.below(3), [0, 5][rng.below(2) as usize])
}

#[test]
fn stream_table_joins_equal_datafusion_batch_joins() {
    for seed in 0..12u64 {
        let mut rng = Rng(900 + seed);
        let stream: Vec<String> = (0..150)
            .map(|i| {
                format!(
                    r#"{{"k":{},"d":{},"v":{i}}}"#,
                    key(&mut rng),
                    decimal(&mut rng)
                )
            })
            .collect();
        let table: Vec<String> = (0..12)
            .map(|i| {
                format!(
                    r#"{{"k":{},"d":{},"w":{}}}"#,
                    key(&mut rng),
                    decimal(&mut rng),
                    i * 10
                )
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.jsonl");
        std::fs::write(&path, table.join("\n")).unwrap();
        let (join, on) = [
            ("LEFT JOIN", "s.k = t.k"),
            ("JOIN", "s.k = t.k"),
            ("JOIN", "s.k = t.k AND s.d = t.d"),
            ("LEFT JOIN", "s.k = t.k AND t.w > s.v % 50"),
        ][seed as usize % 4];
        let select = format!("SELECT s.k, s.v, t.w, t.d FROM s {join} t ON {on}");
        let sql = format!(
            "CREATE STREAM s ({STREAM_COLUMNS});\nCREATE TABLE t ({TABLE_COLUMNS}) WITH ('path' = '{}', 'format' = 'json');\n{select}",
            path.display()
        );
        let mut replay = Replay::plan(&sql).unwrap();
        let mut got = Vec::new();
        let mut i = 0;
        while i < stream.len() {
            let n = 1 + rng.below(20) as usize;
            let chunk: Vec<&[u8]> = stream[i..(i + n).min(stream.len())]
                .iter()
                .map(|l| l.as_bytes())
                .collect();
            i += n;
            got.extend(replay.push(&chunk).unwrap());
        }
        got.extend(replay.finish().unwrap());

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ctx = SessionContext::new();
        register_json_table(&ctx, "s", STREAM_COLUMNS, &stream);
        register_json_table(&ctx, "t", TABLE_COLUMNS, &table);
        let want = rt.block_on(async { ctx.sql(&select).await.unwrap().collect().await.unwrap() });
        assert_eq!(
            sorted_json_rows(&got),
            sorted_json_rows(&want),
            "seed {seed}: {select}"
        );
    }
}
