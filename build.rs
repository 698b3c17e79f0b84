//! Packs libphonenumber's metadata (`data/libphonenumber/PhoneNumberMetadata.xml`, the file the
//! `phonenumber` crate is built from, same version) so that the daemon can load only the
//! territories its config allows: each territory's XML, comments and indentation removed, in one
//! deflate blob, with an index (region, calling code, byte range). The daemon inflates the blob
//! once at start-up and parses the few territories it needs; the crate's own all-territory
//! database costs ~3 MiB of heap once loaded.

use std::fmt::Write as _;
use std::path::PathBuf;

const SOURCE: &str = "data/libphonenumber/PhoneNumberMetadata.xml";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    pack_relative_relocations();
    let xml = std::fs::read_to_string(SOURCE).expect("read the phone metadata");
    let xml = strip_comments(&xml);
    let mut blob = String::new();
    let mut index = String::from("&[\n");
    let mut rest = xml.as_str();
    while let Some(start) = rest.find("<territory ") {
        let end = rest[start..]
            .find("</territory>")
            .map(|e| start + e + "</territory>".len())
            .expect("unterminated <territory>");
        let territory = collapse_between_tags(&rest[start..end]);
        let head = &territory[..territory.find('>').expect("territory tag")];
        let id = attribute(head, "id");
        let code: u16 = attribute(head, "countryCode")
            .parse()
            .expect("numeric countryCode");
        let from = blob.len();
        blob.push_str(&territory);
        writeln!(index, "    ({id:?}, {code}, {from}, {}),", blob.len()).unwrap();
        rest = &rest[end..];
    }
    index.push(']');
    assert!(
        index.matches('\n').count() > 200,
        "the metadata lists every territory"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(
        out.join("phone_territories.deflate"),
        miniz_oxide::deflate::compress_to_vec(blob.as_bytes(), 9),
    )
    .unwrap();
    std::fs::write(
        out.join("phone_territories.rs"),
        format!(
            "/// (region, country calling code, start, end) in the inflated blob.\n\
             pub(crate) const TERRITORIES: &[(&str, u16, usize, usize)] = {index};\n\
             pub(crate) const INFLATED_LEN: usize = {};\n",
            blob.len()
        ),
    )
    .unwrap();
}

/// The daemon is a position-independent executable (ASLR); its ~45,000 relative relocations
/// take 1 MiB as classic RELA entries, all of which the loader reads at start-up (resident
/// pages). DT_RELR packs them into a few KiB. It needs binutils >= 2.38 and glibc >= 2.36 at
/// run time, so it is used only when a native build's toolchain links and runs a probe with it.
fn pack_relative_relocations() {
    const FLAG: &str = "-Wl,-z,pack-relative-relocs";
    let target = std::env::var("TARGET").unwrap_or_default();
    if std::env::var("HOST").ok().as_deref() != Some(target.as_str())
        || !target.ends_with("-linux-gnu")
    {
        return;
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let (source, probe) = (dir.join("relr_probe.c"), dir.join("relr_probe"));
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let linked = std::process::Command::new(cc)
        .arg(&source)
        .arg("-o")
        .arg(&probe)
        .arg(FLAG)
        .status()
        .is_ok_and(|s| s.success());
    if linked
        && std::process::Command::new(&probe)
            .status()
            .is_ok_and(|s| s.success())
    {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    }
}

fn strip_comments(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("-->").expect("unterminated comment");
        rest = &rest[start + end + 3..];
    }
    out.push_str(rest);
    out
}

/// Whitespace-only text between two tags carries nothing (patterns are compiled with
/// `ignore_whitespace`, formats keep their own spaces inside their text).
fn collapse_between_tags(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(gt) = rest.find('>') {
        out.push_str(&rest[..=gt]);
        rest = &rest[gt + 1..];
        let trimmed = rest.trim_start();
        if trimmed.starts_with('<') {
            rest = trimmed;
        }
    }
    out.push_str(rest);
    out
}

fn attribute<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = tag
        .match_indices(&key)
        .find(|(at, _)| tag[..*at].ends_with(char::is_whitespace))
        .map(|(at, _)| at + key.len())
        .unwrap_or_else(|| panic!("{name} in {tag}"));
    let len = tag[start..].find('"').expect("closing quote");
    &tag[start..start + len]
}
