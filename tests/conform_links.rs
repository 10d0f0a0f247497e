//! Hard links on a real mount, against a reference ext4: data and inode shared by every name,
//! link counts, renames between names, errnos; and across two nodes.

mod common;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

conform_child!();

fn nlink(p: &Path) -> io::Result<u64> {
    fs::symlink_metadata(p).map(|m| m.nlink())
}

fn ino(p: &Path) -> io::Result<u64> {
    fs::symlink_metadata(p).map(|m| m.ino())
}

#[test]
fn links_keep_data_and_count_names_as_on_ext4() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, "links");

    pair.same("mkdir", |r| fs::create_dir(r.join("d"))).unwrap();
    pair.same("write", |r| fs::write(r.join("f"), b"shared data"))
        .unwrap();
    let file = pair.stamp("f");
    let dir = pair.stamp("d");
    pair.same("link", |r| fs::hard_link(r.join("f"), r.join("d/g")))
        .unwrap();
    // ctime of the inode and times of the directory that got the name, as on ext4.
    assert_eq!(pair.same_times_since(&file), (false, true));
    assert_eq!(pair.same_times_since(&dir), (true, true));
    pair.same("link 2", |r| fs::hard_link(r.join("d/g"), r.join("h")))
        .unwrap();
    for name in ["f", "d/g", "h"] {
        pair.same_stat(name).unwrap();
        assert_eq!(nlink(&pair.mnt.join(name)).unwrap(), 3, "{name}");
    }
    pair.same("same inode on every name", |r| {
        Ok(ino(&r.join("f"))? == ino(&r.join("d/g"))? && ino(&r.join("h"))? == ino(&r.join("f"))?)
    })
    .map(|same| assert!(same))
    .unwrap();
    // A write through one name shows through the others.
    pair.same("write through a link", |r| {
        fs::write(r.join("h"), b"rewritten")?;
        fs::read(r.join("d/g"))
    })
    .unwrap();
    // Errnos: a taken name, a directory, a missing source.
    pair.same("link onto a name", |r| {
        fs::hard_link(r.join("f"), r.join("h"))
    })
    .unwrap_err();
    assert_eq!(
        pair.same("link a directory", |r| fs::hard_link(
            r.join("d"),
            r.join("dl")
        ))
        .unwrap_err(),
        libc::EPERM
    );
    pair.same("link a missing file", |r| {
        fs::hard_link(r.join("none"), r.join("x"))
    })
    .unwrap_err();
    // A rename of one name onto another name of the same inode: nothing happens.
    pair.same("rename onto a sibling name", |r| {
        fs::rename(r.join("h"), r.join("d/g"))?;
        Ok((r.join("h").exists(), nlink(&r.join("f"))?))
    })
    .unwrap();
    // A rename over a link: that name now is the other file, the inode loses one name.
    pair.same("write other", |r| fs::write(r.join("other"), b"other"))
        .unwrap();
    pair.same("rename over a link", |r| {
        fs::rename(r.join("other"), r.join("h"))?;
        Ok((
            fs::read(r.join("h"))?,
            nlink(&r.join("h"))?,
            nlink(&r.join("f"))?,
        ))
    })
    .unwrap();
    // Links of a symlink are links of the symlink itself.
    pair.same("symlink", |r| {
        std::os::unix::fs::symlink("f", r.join("s"))?;
        let c = std::ffi::CString::new(r.join("s").as_os_str().as_encoded_bytes()).unwrap();
        let t = std::ffi::CString::new(r.join("s2").as_os_str().as_encoded_bytes()).unwrap();
        // linkat without AT_SYMLINK_FOLLOW: the symlink, not its target.
        if unsafe { libc::linkat(libc::AT_FDCWD, c.as_ptr(), libc::AT_FDCWD, t.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((fs::read_link(r.join("s2"))?, nlink(&r.join("s"))?))
    })
    .unwrap();
    pair.same_stat("s2").unwrap();
    // Unlink of the first name keeps the data under the other.
    pair.same("unlink the first name", |r| {
        fs::remove_file(r.join("f"))?;
        Ok((fs::read(r.join("d/g"))?, nlink(&r.join("d/g"))?))
    })
    .unwrap();
    pair.same_stat("d/g").unwrap();
    // Unlink while open: fstat shows no link left, the data stays readable.
    pair.same("unlink while open", |r| {
        use std::io::Read;
        let mut f = fs::File::open(r.join("d/g"))?;
        fs::remove_file(r.join("d/g"))?;
        let links = f.metadata()?.nlink();
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        Ok((links, data))
    })
    .unwrap();
    // cp -al: a tree of links.
    pair.same("tree", |r| {
        fs::create_dir_all(r.join("src/sub"))?;
        fs::write(r.join("src/a"), b"a")?;
        fs::write(r.join("src/sub/b"), b"b")
    })
    .unwrap();
    pair.same("cp -al", |r| {
        let st = Command::new("cp")
            .arg("-al")
            .arg(r.join("src"))
            .arg(r.join("dst"))
            .status()?;
        assert!(st.success(), "cp -al in {}", r.display());
        Ok((
            ino(&r.join("src/a"))? == ino(&r.join("dst/a"))?,
            ino(&r.join("src/sub/b"))? == ino(&r.join("dst/sub/b"))?,
            fs::read(r.join("dst/sub/b"))?,
        ))
    })
    .unwrap();
    for name in ["src/a", "dst/a", "dst/sub/b", "dst/sub", "src"] {
        pair.same_stat(name).unwrap();
    }

    // Across volumes: no link (as across filesystems). The reference has no second volume.
    fs::write(n.p("@home/mine"), b"mine").unwrap();
    let err = fs::hard_link(n.p("@home/mine"), n.p("links/mine")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
    let err = fs::hard_link(pair.mnt.join("src/a"), n.p("@home/a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
}

#[test]
fn links_made_on_one_node_show_on_the_other() {
    let c = Cluster::start(2, 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let data = b"linked across nodes".to_vec();
    write_and_close(&a.p("f"), &data).unwrap();
    fs::create_dir(a.p("d")).unwrap();
    fs::hard_link(a.p("f"), a.p("d/g")).unwrap();
    wait_for_file(&b.p("d/g"), &data, SPREAD_TIMEOUT).unwrap();
    // Every name on B: the same inode, two links (once B's attribute cache has expired).
    assert!(
        wait_until(SPREAD_TIMEOUT, || nlink(&b.p("f")).ok() == Some(2)
            && nlink(&b.p("d/g")).ok() == Some(2)),
        "nlink on B: {:?} {:?}",
        nlink(&b.p("f")),
        nlink(&b.p("d/g"))
    );
    assert_eq!(ino(&b.p("f")).unwrap(), ino(&b.p("d/g")).unwrap());
    assert_eq!(fs::read(b.p("f")).unwrap(), data);

    // The first name goes on B: A still reads the file through the other, with one link.
    fs::remove_file(b.p("f")).unwrap();
    assert!(
        wait_until(SPREAD_TIMEOUT, || !a.p("f").exists()
            && nlink(&a.p("d/g")).ok() == Some(1)),
        "A: f exists {}, d/g nlink {:?}",
        a.p("f").exists(),
        nlink(&a.p("d/g"))
    );
    assert_eq!(fs::read(a.p("d/g")).unwrap(), data);
    // And a write through it on A reaches B.
    write_and_close(&a.p("d/g"), b"changed on A").unwrap();
    wait_for_file(&b.p("d/g"), b"changed on A", SPREAD_TIMEOUT).unwrap();
}
