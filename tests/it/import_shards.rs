//! `load --via` on several machines: every `--shard I/N` uploads its part, shard 0 waits for
//! the others and imports the whole data set in one operation.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fhirgen::emulator::{Emulator, EmulatorOptions};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::common::{
    assert_exit, assert_store_consistent, resource_counts, run, start_emulator, stderr, summary,
};
use crate::import::{expected_counts, generate_to, load_via, objects};

const COUNT: u32 = 3000;

/// `load --via gs://bucket-a/PREFIX --shard auto/N` as the job's task `index` (the index from
/// the environment, as a Kubernetes Indexed Job sets it).
fn shard(
    emulator: &Emulator,
    state: &std::path::Path,
    prefix: &str,
    index: u32,
    of: u32,
) -> Command {
    let mut command = load_via(emulator, state, prefix, COUNT);
    command
        .args(["--shard", &format!("auto/{of}")])
        .env("JOB_COMPLETION_INDEX", index.to_string());
    command
}

/// The same as a Cloud Run job's task, index and count from the environment.
fn cloud_run_task(
    emulator: &Emulator,
    state: &std::path::Path,
    prefix: &str,
    index: u32,
) -> Command {
    let mut command = load_via(emulator, state, prefix, COUNT);
    command
        .args(["--shard", "auto", "--keep-objects"])
        .env("CLOUD_RUN_TASK_INDEX", index.to_string())
        .env("CLOUD_RUN_TASK_COUNT", "3");
    command
}

/// Runs the commands at the same time; gives their outputs in order.
async fn run_together(commands: Vec<Command>) -> Vec<Output> {
    let runs: Vec<_> = commands
        .into_iter()
        .map(|command| tokio::spawn(run(command)))
        .collect();
    let mut outputs = Vec::new();
    for each in runs {
        outputs.push(each.await.unwrap());
    }
    outputs
}

/// Whether the emulator knows the operation `name` with its id moved on by `later`.
async fn operation_after(emulator: &Emulator, name: &str, later: u64) -> bool {
    let (dataset, id) = name.rsplit_once('/').unwrap();
    let id: u64 = id.parse().unwrap();
    let url = format!("http://{}/v1/{dataset}/{}", emulator.addr(), id + later);
    reqwest::get(url).await.unwrap().status() == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_upload_their_parts_and_shard_0_imports_once() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let states: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let expected = expected_counts(COUNT);
    let outputs = run_together(
        (0..3)
            .map(|i| shard(&emulator, states[i as usize].path(), "sharded", i, 3))
            .collect(),
    )
    .await;
    for output in &outputs {
        assert_exit(output, 0);
    }
    let first = summary(&outputs[0]);
    assert_eq!(first["shard"], "0/3");
    assert_eq!(first["resources"], COUNT, "{first}");
    assert_eq!(first["imported"], COUNT);
    assert_eq!(first["failed"], 0);
    assert_eq!(first["objects"], 3, "one object per shard");
    assert_eq!(first["objects_deleted"], true);
    let operation = first["operation"].as_str().unwrap().to_owned();
    assert!(
        !operation_after(&emulator, &operation, 1).await,
        "one import"
    );
    let mut uploaded = 0;
    for (i, output) in outputs.iter().enumerate().skip(1) {
        let part = summary(output);
        assert_eq!(part["shard"], format!("{i}/3"));
        assert_eq!(part["imported_by"], "shard 0/3", "{part}");
        assert!(part.get("operation").is_none());
        assert_eq!(part["imported"], 0);
        uploaded += part["resources"].as_u64().unwrap();
    }
    assert!(uploaded > 0 && uploaded < u64::from(COUNT));
    assert_eq!(resource_counts(&emulator).await, expected);
    assert!(objects(&emulator, "sharded").await.is_empty());

    // As Cloud Run tasks, keeping the objects, twice: the second run uploads nothing and
    // imports again, and the store stays exact.
    for round in 1..=2 {
        let outputs = run_together(
            (0..3)
                .map(|i| cloud_run_task(&emulator, states[i as usize].path(), "sharded", i))
                .collect(),
        )
        .await;
        for (i, output) in outputs.iter().enumerate() {
            assert_exit(output, 0);
            let part = summary(output);
            let uploaded = if round == 1 { 1 } else { 0 };
            assert_eq!(
                part["objects_uploaded"], uploaded,
                "round {round}, shard {i}: {part}"
            );
        }
        let first = summary(&outputs[0]);
        assert_eq!(first["imported"], COUNT);
        assert_eq!(first["objects_deleted"], false);
        assert!(operation_after(&emulator, &operation, round).await);
        assert!(!operation_after(&emulator, &operation, round + 1).await);
        assert_eq!(objects(&emulator, "sharded").await.len(), 6);
        assert_eq!(resource_counts(&emulator).await, expected);
    }
    assert_store_consistent(&emulator).await;
}

/// A command running in the background whose stderr lines can be waited for.
struct Running {
    child: std::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (30 s at most) for a stderr line holding `text`.
    async fn wait_for(&mut self, text: &str) {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
                if self.seen.last().unwrap().contains(text) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            found,
            Ok(true),
            "no line with {text:?} in:\n{}",
            self.seen.join("\n")
        );
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the end; the output with every stderr line.
    async fn finish(mut self) -> Output {
        let child = self.child;
        let mut output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        output.stderr = self.seen.join("\n").into_bytes();
        output
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_0_waits_for_the_others_and_gives_up_naming_them() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    let mut alone = shard(&emulator, state.path(), "waits", 0, 3);
    alone.args(["--wait-for-shards", "1s"]);
    let output = run(alone).await;
    assert_exit(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains(
            "waiting for shards under gs://bucket-a/waits/: 1 of 3 uploaded; not yet 1, 2"
        ) && text.contains("shard(s) 1, 2 of 3 had not finished uploading")
            && text.contains("--wait-for-shards 1s"),
        "{text}"
    );
    assert_eq!(
        objects(&emulator, "waits").await.len(),
        2,
        "shard 0's part is kept"
    );

    // Started again, it waits; the others come, and it imports, sending nothing again.
    let mut waiting = Running::spawn(shard(&emulator, state.path(), "waits", 0, 3));
    waiting.wait_for("1 of 3 uploaded; not yet 1, 2").await;
    for i in 1..3 {
        assert_exit(&run(shard(&emulator, state.path(), "waits", i, 3)).await, 0);
    }
    let output = waiting.finish().await;
    assert_exit(&output, 0);
    let first = summary(&output);
    assert_eq!(first["objects_uploaded"], 0, "{first}");
    assert_eq!(first["imported"], COUNT);
    assert_eq!(resource_counts(&emulator).await, expected_counts(COUNT));
    assert!(objects(&emulator, "waits").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_wait_and_keeps_the_upload() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    let mut waiting = Running::spawn(shard(&emulator, state.path(), "stopped", 0, 2));
    waiting.wait_for("waiting for shards").await;
    waiting.signal("INT");
    let output = waiting.finish().await;
    assert_exit(&output, 130);
    let summary: Value = summary(&output);
    assert_eq!(summary["interrupted"], true);
    assert!(summary.get("operation").is_none(), "{summary}");
    assert!(stderr(&output).contains("nothing was imported, and the uploaded objects are kept"));
    assert_eq!(objects(&emulator, "stopped").await.len(), 2);
    assert_eq!(crate::common::total_resources(&emulator).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_another_count_is_refused() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    let refusal = "is shard 1/2 of this same data set, and this run is shard 0/3";

    // Found before the upload...
    let mut other = generate_to(&emulator, state.path(), "mixed", COUNT);
    other.args(["--shard", "1/2"]);
    assert_exit(&run(other).await, 0);
    let before = objects(&emulator, "mixed").await;
    let output = run(shard(&emulator, state.path(), "mixed", 0, 3)).await;
    assert_exit(&output, 2);
    assert!(stderr(&output).contains(refusal), "{}", stderr(&output));
    assert_eq!(
        objects(&emulator, "mixed").await,
        before,
        "nothing uploaded"
    );

    // ...and while shard 0 waits.
    let mut waiting = Running::spawn(shard(&emulator, state.path(), "racing", 0, 3));
    waiting.wait_for("waiting for shards").await;
    let mut other = generate_to(&emulator, state.path(), "racing", COUNT);
    other.args(["--shard", "1/2"]);
    assert_exit(&run(other).await, 0);
    let output = waiting.finish().await;
    assert_exit(&output, 2);
    assert!(stderr(&output).contains(refusal), "{}", stderr(&output));
    assert_eq!(crate::common::total_resources(&emulator).await, 0);
}
