//! Loading functions: edits served without a restart, and files that do not load stopping startup.

mod common;

use std::time::{Duration, Instant};

use common::configs::LUA;
use common::{Harness, write_function};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_are_served_without_restart_and_broken_edits_keep_the_old_version() {
    let h = Harness::start_with(1, LUA, &[("reload/me.lua", "return function() return 'v1' end")]).await;
    let fetch = || async {
        h.http
            .get(h.url("/reload/me"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(fetch().await, "v1");
    write_function(&h.dir, "reload/me.lua", "return function() return 'v2' end");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetch().await != "v2" {
        assert!(Instant::now() < deadline, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    write_function(&h.dir, "reload/me.lua", "return function( return 'v3' end");
    // A new file on the path me.lua serves: not served (the same files would stop startup); me.lua keeps its path.
    write_function(&h.dir, "reload/me/index.lua", "return function() return 'usurper' end");
    write_function(&h.dir, "reload/new.lua", "return function() return 'new' end");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let added = h.http.get(h.url("/reload/new")).send().await.unwrap();
        if added.status() == 200 {
            assert_eq!(added.text().await.unwrap(), "new");
            break;
        }
        assert!(Instant::now() < deadline, "the new file was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The broken edit and the clashing file were seen in the same reload as the new file (written after them: the
    // reload reads the folder as it is), and v2 keeps serving.
    assert_eq!(fetch().await, "v2");
}

/// A functions folder replaced while serving is watched again: a symlink to a release folder swapped as deploy
/// tools swap it (`ln -sfn`: a new link renamed over the old one), or the folder removed and written again. Its files
/// are served, and so are later edits to them (the watch followed the old folder, wherever it went); while the
/// folder is gone, the functions loaded keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_functions_folder_replaced_while_serving_is_watched_again() {
    let h = Harness::start_with(1, LUA, &[("swap/me.lua", "return function() return 'v1' end")]).await;
    let served = |expected: &'static str, what: &'static str| {
        let h = &h;
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let answer = h.http.get(h.url("/swap/me")).send().await.unwrap();
                if answer.text().await.unwrap() == expected {
                    return;
                }
                assert!(Instant::now() < deadline, "{what}: {expected} was not served");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let write = |folder: &str, source: &str| {
        let file = h.dir.join(folder).join("swap/me.lua");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, source).unwrap();
    };
    let swap_link_to = |release: &str| {
        let next = h.dir.join("functions.next");
        std::os::unix::fs::symlink(release, &next).unwrap();
        std::fs::rename(&next, h.dir.join("functions")).unwrap();
    };
    served("v1", "at startup").await;
    std::fs::rename(h.dir.join("functions"), h.dir.join("release-1")).unwrap();
    swap_link_to("release-1");
    write("release-1", "return function() return 'v2' end");
    served("v2", "an edit behind the link").await;
    write("release-2", "return function() return 'v3' end");
    swap_link_to("release-2");
    served("v3", "the link swapped to another release").await;
    write("release-2", "return function() return 'v4' end");
    served("v4", "an edit in the new release").await;
    // Gone for longer than a reload waits for events to settle: what was loaded keeps serving meanwhile.
    std::fs::remove_file(h.dir.join("functions")).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let meanwhile = h.http.get(h.url("/swap/me")).send().await.unwrap();
    assert_eq!(
        meanwhile.status(),
        200,
        "the functions loaded stop serving while their folder is gone"
    );
    assert_eq!(meanwhile.text().await.unwrap(), "v4");
    write("functions", "return function() return 'v5' end");
    served("v5", "the link replaced by a folder").await;
    write("functions", "return function() return 'v6' end");
    served("v6", "an edit in that folder").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_that_do_not_load_stop_startup_with_file_and_line() {
    let dir = common::temp_dir();
    write_function(&dir, "ok.lua", "return function() return 'ok' end");
    write_function(&dir, "hooks/broken.lua", "return function(req)\n  local x = = 1\nend");
    write_function(&dir, "not_a_function.lua", "return 42");
    // Both at once: a file that does not compile does not hide one that compiles but does not load.
    let config = luka::config::Config::from_toml("", &dir, |_| None).unwrap();
    let error = luka::App::new(config).unwrap_err().to_string();
    assert!(error.contains("functions/hooks/broken.lua:2:"), "{error}");
    assert!(
        error.contains("functions/not_a_function.lua") && error.contains("must return a function"),
        "{error}"
    );
    std::fs::remove_file(dir.join("functions/hooks/broken.lua")).unwrap();
    let config = luka::config::Config::from_toml("", &dir, |_| None).unwrap();
    let error = luka::App::new(config).unwrap_err().to_string();
    assert!(
        error.contains("functions/not_a_function.lua") && error.contains("must return a function"),
        "{error}"
    );
    assert!(!error.contains("broken.lua"), "{error}");
}
