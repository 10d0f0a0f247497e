//! The web dashboard in a real browser (headless Chromium through chromedriver) against a real
//! network of three nodes, each of its own user (a certified network: node 1 founded it and is
//! its admin). Every tab loads with nothing in the browser's console and no error line in the
//! page, and no request leaves the node's own origin; files uploaded in the browser on node 1
//! (with the file input, and by a drop on the drop zone) read back byte-equal through node 2's
//! FUSE mount, and a restore made in the browser too; a volume made and shared in the browser
//! with node 3's user shows in node 3's `p2pfs-ctl volume list` and its mount; an invite made in
//! the browser has its QR code and is revoked from the page. On two nodes, the Limits tab sets
//! bandwidth limits that `p2pfs-ctl limit` reports and pauses and resumes the node's sync.
//! Screenshots of every tab go to `target/web-screenshots/`. Needs root (FUSE) and Chromium
//! (`packaging/install-deps.sh --test`).

mod common;

#[path = "web_ui/browser.rs"]
mod browser;

use browser::Browser;
use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Where the screenshots go: `target/web-screenshots/` (kept as CI artifacts).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("web-screenshots")
}

/// `p2pfs-ctl web --json` of `node`: its dashboard's URL and login link.
fn web_urls(node: &Node) -> (String, String) {
    let out = node.ctl_ok(&["web", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let url = v["url"]
        .as_str()
        .expect("url")
        .trim_end_matches('/')
        .to_string();
    let login = v["login_url"].as_str().expect("login_url").to_string();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "the dashboard listens on loopback by default: {url}"
    );
    (url, login)
}

/// Opens `tab` by its link in the page and waits until its data loaded.
async fn open_tab(b: &Browser, tab: &str) {
    b.click(&format!("#tabs a[data-tab={tab}]")).await;
    b.wait_js(
        &format!("the {tab} tab loads"),
        &format!("return document.body.dataset.loaded === '{tab}'"),
    )
    .await;
}

/// The page shows no error line and the browser logged nothing wrong since the last check.
async fn assert_clean(b: &Browser, what: &str) {
    let err = b
        .js(
            "const e = document.getElementById('error'); return e.hidden ? '' : e.textContent",
            vec![],
        )
        .await;
    assert_eq!(err, json!(""), "{what}: the page shows an error");
    let problems = b.log_problems().await;
    assert!(
        problems.is_empty(),
        "{what}: the browser's console: {problems:?}"
    );
}

/// Every resource the page loaded came from `origin` (no CDN, no font, nothing outside).
async fn assert_only_origin(b: &Browser, origin: &str) {
    let urls = b
        .js(
            "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => e.name)",
            vec![],
        )
        .await;
    let urls: Vec<String> = serde_json::from_value(urls).unwrap();
    assert!(
        urls.len() >= 4,
        "the page, its script, style and icon: {urls:?}"
    );
    let outside: Vec<&String> = urls
        .iter()
        .filter(|u| !u.starts_with(&format!("{origin}/")))
        .collect();
    assert!(outside.is_empty(), "requests outside {origin}: {outside:?}");
}

async fn screenshot(b: &Browser, name: &str) {
    b.screenshot(&screenshot_dir().join(format!("{name}.png")))
        .await;
}

/// Drops a file made in the page (`size` bytes, byte i = (i * 7 + seed) % 251) on the drop
/// zone, as a drag from the desktop would.
async fn drop_file(b: &Browser, name: &str, size: usize, seed: u8) {
    b.js(
        "const [name, size, seed] = arguments;
         const bytes = new Uint8Array(size);
         for (let i = 0; i < size; i++) bytes[i] = (i * 7 + seed) % 251;
         const dt = new DataTransfer();
         dt.items.add(new File([bytes], name));
         const zone = document.getElementById('fs-drop');
         for (const type of ['dragenter', 'dragover', 'drop']) {
           zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
         }",
        vec![json!(name), json!(size), json!(seed)],
    )
    .await;
}

fn dropped_bytes(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| ((i * 7 + seed as usize) % 251) as u8)
        .collect()
}

/// The bytes behind the download link of `name` in the file list, fetched by the page as the
/// link's navigation would: through the one-time URL its click asks the node for, no header.
async fn download(b: &Browser, name: &str) -> Vec<u8> {
    let hex_text = b
        .js(
            "const [name] = arguments;
             return (async () => {
               const a = document.querySelector(`#fs-list tr[data-name='${name}'] a.file`);
               const resp = await fetch(await downloadUrl(a.dataset.path), { credentials: 'omit' });
               const buf = new Uint8Array(await resp.arrayBuffer());
               return Array.from(buf, (x) => x.toString(16).padStart(2, '0')).join('');
             })();",
            vec![json!(name)],
        )
        .await;
    hex::decode(hex_text.as_str().expect("hex")).expect("hex bytes")
}

async fn wait_row(b: &Browser, table: &str, attr: &str, value: &str) {
    b.wait_js(
        &format!("a row {attr}={value} in {table}"),
        &format!("return !!document.querySelector(\"{table} tr[data-{attr}='{value}']\")"),
    )
    .await;
}

async fn wait_notice(b: &Browser, text: &str) {
    b.wait_js(
        &format!("the notice '{text}'"),
        &format!(
            "const n = document.getElementById('notice'); return !n.hidden && n.textContent.includes({})",
            json!(text)
        ),
    )
    .await;
}

#[test]
fn the_dashboard_drives_a_real_network_from_a_real_browser() {
    let c = Cluster::certified(3, 3);
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let (url, login) = web_urls(n1);
    let n3_key = public_key(n3);
    // Two versions of one file, uploaded in turn (different sizes: the restore below is seen
    // by its size first), and a file dropped on the page.
    let first = random_bytes(23, 1536 * KIB + 17);
    let second = random_bytes(24, 700 * KIB);
    let local = n1.scratch().join("from-the-browser.bin");
    std::fs::write(&local, &first).unwrap();
    let second_local = n1.scratch().join("second").join("from-the-browser.bin");
    std::fs::create_dir_all(second_local.parent().unwrap()).unwrap();
    std::fs::write(&second_local, &second).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = Browser::start().await;

        // Without the login link: the page loads and says how to log in.
        b.client.goto(&format!("{url}/")).await.unwrap();
        b.wait_js(
            "the page asks to log in",
            "return document.body.dataset.loaded === 'login' && !document.getElementById('login').hidden && document.getElementById('login').textContent.includes('p2pfs-ctl web')",
        )
        .await;
        let refused = b.log().await;
        assert!(
            refused.iter().any(|l| l.contains("401")),
            "the API refused the page without the session: {refused:?}"
        );

        // The login link sets the session and leads to the overview.
        b.client.goto(&login).await.unwrap();
        b.wait_js(
            "the overview loads after login",
            "return document.body.dataset.loaded === 'overview'",
        )
        .await;
        assert_eq!(
            b.client.current_url().await.unwrap().as_str(),
            format!("{url}/"),
            "the login link leads to the dashboard (and the token leaves the address bar)"
        );
        // Peers by name, alive; live updates arrive; the health census answered.
        for name in ["node2", "node3"] {
            b.wait_js(
                &format!("{name} alive in the peers table"),
                &format!(
                    "return Array.from(document.querySelectorAll('#peers tbody tr')).some(r => r.cells[0].textContent === '{name}' && r.cells[1].textContent === 'alive' && r.cells[2].textContent === 'direct')"
                ),
            )
            .await;
        }
        b.wait_js(
            "live updates",
            "return document.getElementById('live').textContent === 'live'",
        )
        .await;
        b.wait_js(
            "the copies census",
            "return document.getElementById('ov-health').textContent.includes(' at R')",
        )
        .await;
        let node_name = b
            .js("return document.getElementById('ov-name').textContent", vec![])
            .await;
        assert_eq!(node_name, json!("node1"));
        assert_clean(&b, "overview").await;

        // Files: upload with the file input, then a drop; both read back on node 2's mount.
        open_tab(&b, "files").await;
        b.type_into("#fs-input", local.to_str().unwrap()).await;
        wait_row(&b, "#fs-list", "name", "from-the-browser.bin").await;
        wait_notice(&b, "uploaded 1 file").await;
        drop_file(&b, "dropped.bin", 300 * KIB + 3, 5).await;
        wait_row(&b, "#fs-list", "name", "dropped.bin").await;
        tokio::task::block_in_place(|| {
            wait_for_file(&n2.p("from-the-browser.bin"), &first, SPREAD_TIMEOUT)
                .unwrap_or_else(|e| panic!("node 2 reads the uploaded file: {e}"));
            wait_for_file(
                &n2.p("dropped.bin"),
                &dropped_bytes(300 * KIB + 3, 5),
                SPREAD_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("node 2 reads the dropped file: {e}"));
        });
        assert_bytes_eq(
            "the download link",
            &download(&b, "from-the-browser.bin").await,
            &first,
        );

        // A second version over it; the first comes back from the versions list (an upload
        // replaces the file, so the old version is restored as a copy beside it).
        b.type_into("#fs-input", second_local.to_str().unwrap()).await;
        tokio::task::block_in_place(|| {
            wait_for_file(&n2.p("from-the-browser.bin"), &second, SPREAD_TIMEOUT)
                .unwrap_or_else(|e| panic!("node 2 reads the second version: {e}"));
        });
        b.click("#fs-list tr[data-name='from-the-browser.bin'] button.versions")
            .await;
        b.wait_js(
            "the first version listed",
            "return !!document.querySelector(\"#fs-versions tr[data-number='1'] button.restore\")",
        )
        .await;
        b.click("#fs-versions tr[data-number='1'] button.restore").await;
        wait_notice(&b, "restored from-the-browser.bin version 1").await;
        tokio::task::block_in_place(|| {
            wait_for_file(
                &n2.p("from-the-browser (version 1).bin"),
                &first,
                SPREAD_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("node 2 reads the restored version: {e}"));
            assert_file_eq(&n2.p("from-the-browser.bin"), &second);
        });

        // Pin from the list: node 1 lists the pin.
        b.click("#fs-list tr[data-name='dropped.bin'] button.pin").await;
        wait_row(&b, "#fs-pins", "path", "dropped.bin").await;
        let pins = tokio::task::block_in_place(|| n1.ctl_ok(&["pins", "--json"]));
        assert!(pins.contains("dropped.bin"), "{pins}");
        assert_clean(&b, "files").await;
        screenshot(&b, "files").await;

        // Sharing: a volume made and shared with node 3's user in the browser.
        open_tab(&b, "sharing").await;
        b.type_into("#vol-create input[name=name]", "browser-team").await;
        b.click("#vol-create button[type=submit]").await;
        wait_row(&b, "#vol-list", "volume", "browser-team").await;
        b.js(
            "document.querySelector('#vol-share select[name=name]').value = 'browser-team'",
            vec![],
        )
        .await;
        // A refused request shows as the page's error line (and nothing in the console).
        b.type_into("#vol-share input[name=with]", "not-a-key").await;
        b.click("#vol-share button[type=submit]").await;
        b.wait_js(
            "the refusal on the error line",
            "const e = document.getElementById('error'); return !e.hidden && e.textContent.includes('not a user public key')",
        )
        .await;
        b.js(
            "document.querySelector('#vol-share input[name=with]').value = ''",
            vec![],
        )
        .await;
        b.type_into("#vol-share input[name=with]", &n3_key).await;
        b.click("#vol-share button[type=submit]").await;
        wait_notice(&b, "shared browser-team").await;
        tokio::task::block_in_place(|| {
            let shown = wait_until(SPREAD_TIMEOUT, || {
                let out = n3.ctl_ok(&["volume", "list", "--json"]);
                let v: Value = serde_json::from_str(&out).unwrap();
                v.as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["dir"] == "/@browser-team" && v["name"] == "browser-team")
            });
            assert!(shown, "node 3 never listed the volume shared in the browser");
            assert!(
                wait_until(SPREAD_TIMEOUT, || n3.p("@browser-team").is_dir()),
                "node 3's mount never showed @browser-team"
            );
        });

        // An invite with its QR code, listed by node 1, then revoked from the page.
        b.click("#inv-make button[type=submit]").await;
        let id = b
            .wait_js(
                "the new invite",
                "const n = document.getElementById('inv-new'); return !n.hidden && n.dataset.id",
            )
            .await;
        let id = id.as_str().unwrap().to_string();
        let token = b
            .js("return document.getElementById('inv-token').value", vec![])
            .await;
        assert!(
            token.as_str().unwrap().starts_with("p2pfs-invite-"),
            "{token}"
        );
        b.wait_js(
            "the QR code image",
            "const i = document.getElementById('inv-qr'); return i.complete && i.naturalWidth > 20",
        )
        .await;
        wait_row(&b, "#inv-list", "invite", &id).await;
        let listed = tokio::task::block_in_place(|| n1.ctl_ok(&["invites", "--json"]));
        assert!(listed.contains(&id), "{listed}");
        assert_clean(&b, "sharing").await;
        screenshot(&b, "sharing").await;
        b.click(&format!("#inv-list tr[data-invite='{id}'] button.revoke"))
            .await;
        b.wait_js(
            "the invite revoked",
            &format!(
                "const r = document.querySelector(\"#inv-list tr[data-invite='{id}']\"); return r && r.cells[4].textContent === 'revoked'"
            ),
        )
        .await;
        let listed = tokio::task::block_in_place(|| n1.ctl_ok(&["invites", "--json"]));
        let v: Value = serde_json::from_str(&listed).unwrap();
        let inv = v
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{listed}"));
        assert_eq!(inv["state"], "revoked", "{listed}");

        // Members: all three, with the admin's actions on the others.
        open_tab(&b, "members").await;
        for name in ["node1 (this node)", "node2", "node3"] {
            b.wait_js(
                &format!("member {name}"),
                &format!(
                    "return Array.from(document.querySelectorAll('#mem-list tbody tr')).some(r => r.cells[0].textContent === '{name}')"
                ),
            )
            .await;
        }
        let expel_buttons = b
            .js(
                "return document.querySelectorAll('#mem-list button.expel').length",
                vec![],
            )
            .await;
        assert_eq!(expel_buttons, json!(2), "the admin may expel the two others");
        assert_clean(&b, "members").await;
        screenshot(&b, "members").await;

        // Back to the overview, for its picture with the files counted and the plots drawn.
        open_tab(&b, "overview").await;
        b.wait_js(
            "the copies census of the files",
            "return /^[1-9][0-9]* of [1-9][0-9]* at R/.test(document.getElementById('ov-health').textContent)",
        )
        .await;
        // The traffic plot shows the uploads' copies going out (a sample arrives every 10 s).
        b.wait_js(
            "the uploads in the traffic samples",
            "return state.history.some((s) => s.sent_bytes_per_sec > 100000)",
        )
        .await;
        assert_clean(&b, "overview").await;
        screenshot(&b, "overview").await;
        assert_only_origin(&b, &url).await;
    });
}

/// The Limits tab: bandwidth limits set in the form are the node's (`p2pfs-ctl limit`), "back to
/// the config's" undoes them, and pause/resume stops and restarts the node's sync (its peer sees
/// it paused, then the network forms again). No console error, no error line.
#[test]
fn limits_and_pause_from_the_browser() {
    let c = Cluster::start(2, 2);
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let (url, login) = web_urls(n1);
    let n1_id = n1.peer_id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = Browser::start().await;
        b.client.goto(&login).await.unwrap();
        b.wait_js(
            "the overview loads after login",
            "return document.body.dataset.loaded === 'overview'",
        )
        .await;
        open_tab(&b, "limits").await;
        assert_clean(&b, "limits").await;

        b.type_into("#lim-form input[name=upload]", "2MiB").await;
        b.type_into("#lim-form input[name=peer_download]", "500KB").await;
        b.click("#lim-form button[type=submit]").await;
        wait_notice(&b, "limits set").await;
        let limits = tokio::task::block_in_place(|| n1.ctl_ok(&["limit", "--json"]));
        let v: Value = serde_json::from_str(&limits).unwrap();
        assert_eq!(
            (
                &v["limits"]["upload"],
                &v["limits"]["download"],
                &v["limits"]["peer_upload"],
                &v["limits"]["peer_download"],
                &v["source"]
            ),
            (
                &json!(2 * MIB),
                &json!(0),
                &json!(0),
                &json!(500_000),
                &json!("runtime")
            ),
            "{limits}"
        );
        let shown = b
            .js(
                "return document.querySelector('#lim-form input[name=upload]').value",
                vec![],
            )
            .await;
        assert_eq!(shown, json!("2MiB"), "the form shows the limit in force");
        b.click("#lim-config").await;
        wait_notice(&b, "limits back to the config's").await;
        let limits = tokio::task::block_in_place(|| n1.ctl_ok(&["limit", "--json"]));
        let v: Value = serde_json::from_str(&limits).unwrap();
        assert_eq!(
            (&v["limits"]["upload"], &v["source"]),
            (&json!(0), &json!("config")),
            "{limits}"
        );

        b.click("#pause-toggle").await;
        wait_notice(&b, "paused").await;
        tokio::task::block_in_place(|| {
            assert_eq!(n1.status()["paused"], true);
            assert!(
                wait_until(SPREAD_TIMEOUT, || n2.peer_state(&n1_id).as_deref()
                    == Some("paused")),
                "node 2 never saw node 1 paused: {:?}",
                n2.peer_state(&n1_id)
            );
        });
        b.wait_js(
            "the page shows the pause",
            "return document.getElementById('pause-toggle').textContent === 'Resume sync' && document.getElementById('node-title').textContent.includes('paused')",
        )
        .await;
        assert_clean(&b, "limits, paused").await;
        screenshot(&b, "limits").await;
        b.click("#pause-toggle").await;
        wait_notice(&b, "resumed").await;
        tokio::task::block_in_place(|| {
            assert_eq!(n1.status()["paused"], false);
            c.wait_formed();
        });
        b.wait_js(
            "the page shows sync again",
            "return document.getElementById('pause-toggle').textContent === 'Pause sync'",
        )
        .await;
        assert_clean(&b, "limits, resumed").await;
        assert_only_origin(&b, &url).await;
    });
}
