use super::*;

fn id(i: u128) -> u128 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1
}

fn options(dir: &Path) -> WindowOptions {
    WindowOptions {
        window_ms: 3_600_000,
        dir: Some(dir.to_owned()),
        min_slice_ids: 1_000,
        bits_per_key: 12,
        seed: 0,
    }
}

const T0: i64 = 1_800_000_000_000;

#[test]
fn repeats_from_every_part_of_the_window_are_found_and_new_ids_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = DedupeWindow::open(options(dir.path()), T0).unwrap();
    let none: HashSet<u128> = HashSet::new();
    let n = 40_000u128;
    for i in 0..n {
        let at = T0 + i as i64 * 50;
        assert!(!w.contains(id(i)), "id #{i} is new");
        w.insert_new(id(i), at);
        if i % 500 == 0 {
            w.maintain(at, &none);
        }
    }
    w.flush(T0 + n as i64 * 50);
    // Dozens of slices, merged down to few runs (each spanning at most an eighth of the window).
    assert!((4..=MAX_RUNS + 2).contains(&w.runs()), "{} runs", w.runs());
    assert_eq!(w.len(), n as usize);
    // Every id, from the oldest run to the open slice, is a duplicate; none new is.
    for i in 0..n {
        assert!(w.contains(id(i)), "repeat of id #{i}");
    }
    for i in n..n + 20_000 {
        assert!(!w.contains(id(i)), "new id #{i}");
    }
    let stats = w.stats();
    assert!(stats.disk_lookups >= n as u64 - 10_000);
    assert!(stats.false_positives > 0 && stats.false_positives < stats.disk_lookups);
    assert_eq!(stats.disk_errors, 0);
    // Runs hold fences and filters only: a few bytes an id.
    let per_id = w.memory_bytes() as f64 / w.len() as f64;
    assert!(per_id < 8.0, "{per_id} bytes an id");
}

#[test]
fn a_reopened_window_loads_its_runs_and_reads_the_log_only_since_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let none: HashSet<u128> = HashSet::new();
    let end = {
        let mut w = DedupeWindow::open(options(dir.path()), T0).unwrap();
        for i in 0..5_500u128 {
            w.insert_new(id(i), T0 + i as i64);
        }
        w.flush(T0 + 5_500);
        assert_eq!(w.runs(), 5);
        w.covered_until_ms()
    };
    assert_eq!(end, None, "a fresh directory covers nothing");
    let mut w = DedupeWindow::open(options(dir.path()), T0 + 6_000).unwrap();
    assert_eq!(w.runs(), 5);
    // The fifth run ends with id #4999, admitted at T0 + 4999.
    assert_eq!(w.covered_until_ms(), Some(T0 + 4_999));
    assert!((0..5_000u128).all(|i| w.contains(id(i))));
    assert!(!w.contains(id(5_000)), "the open slice was not saved");
    // An hour after the first run's last id, its run is gone.
    w.maintain(T0 + 3_600_000 + 1_000, &none);
    assert_eq!(w.runs(), 4);
    assert!(!w.contains(id(10)));
    assert!(w.contains(id(4_999)));
    drop(w);
    // A damaged run is deleted and the whole window is read again.
    let first = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "run"))
        .unwrap();
    std::fs::write(&first, b"SLDDRUN1 not a run").unwrap();
    let w = DedupeWindow::open(options(dir.path()), T0 + 6_000).unwrap();
    assert_eq!(w.covered_until_ms(), None);
    assert_eq!(w.runs(), 3);
}

#[test]
fn slices_wait_for_pending_writes_and_forgotten_ids_are_new_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = DedupeWindow::open(options(dir.path()), T0).unwrap();
    for i in 0..1_000u128 {
        w.insert_new(id(i), T0);
    }
    assert_eq!(w.unsaved_slices(), 1, "a thousand ids close a slice");
    let mut pending: HashSet<u128> = HashSet::new();
    pending.insert(id(7));
    w.maintain(T0 + 1, &pending);
    // Not handed to the writer: its unconfirmed id can still be forgotten.
    assert!(w.remove(id(7)));
    assert!(!w.contains(id(7)));
    pending.clear();
    w.flush(T0 + 2);
    assert_eq!(w.runs(), 1);
    assert!(!w.contains(id(7)));
    assert!(w.contains(id(8)));
    // A slice also closes when its time is up, however few its ids.
    w.insert_new(id(5_000), T0 + 3);
    w.maintain(T0 + 3 + 3_600_000 / 32, &pending);
    w.flush(T0 + 4 + 3_600_000 / 32);
    assert_eq!(w.runs(), 2);
}

#[test]
fn without_a_directory_slices_stay_in_memory_and_exact() {
    let mut w = DedupeWindow::open(
        WindowOptions {
            min_slice_ids: 100,
            ..WindowOptions::default()
        },
        T0,
    )
    .unwrap();
    for i in 0..1_000u128 {
        w.insert_new(id(i), T0);
    }
    w.flush(T0);
    assert_eq!(w.runs(), 0);
    assert!((0..1_000u128).all(|i| w.contains(id(i))));
    assert!(!w.contains(id(1_000)));
}

#[test]
fn merged_runs_keep_every_id_across_a_reopen_and_a_merge_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let none: HashSet<u128> = HashSet::new();
    {
        let mut w = DedupeWindow::open(options(dir.path()), T0).unwrap();
        for i in 0..12_000u128 {
            w.insert_new(id(i), T0 + i as i64);
            if i % 1_000 == 999 {
                w.maintain(T0 + i as i64, &none);
            }
        }
        w.flush(T0 + 12_000);
        assert!(w.runs() <= MAX_RUNS, "{} runs", w.runs());
        assert!((0..12_000u128).all(|i| w.contains(id(i))));
    }
    // A merge cut short between its run's rename and its inputs' deletion: an input's
    // copy beside the merged run is dropped at the next open.
    let runs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "run"))
        .collect();
    let merged = runs
        .iter()
        .map(|p| Run::open(p).unwrap())
        .find(|r| r.meta.first_seq < r.meta.seq)
        .expect("a merged run");
    let input = RunMeta {
        count: 1,
        first_seq: merged.meta.first_seq,
        seq: merged.meta.first_seq,
        min_at_ms: merged.meta.min_at_ms,
        max_at_ms: merged.meta.min_at_ms,
    };
    Run::write(dir.path(), input, std::iter::once(Ok((0, id(0)))), 12).unwrap();
    let mut w = DedupeWindow::open(options(dir.path()), T0 + 13_000).unwrap();
    assert_eq!(w.covered_until_ms(), Some(T0 + 11_999));
    assert!(
        !dir.path()
            .join(run::file_name(input.first_seq, input.seq))
            .exists()
    );
    assert!((0..12_000u128).all(|i| w.contains(id(i))));
    assert!(!w.contains(id(12_000)));
}
