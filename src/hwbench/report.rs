//! The per-key report files: `<out>/<n>-<slug>.json`, `.md` (for people) and `.xml` (JUnit,
//! for CI dashboards).

use std::path::Path;

use super::KeyReport;

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn markdown(r: &KeyReport) -> String {
    let d = &r.device;
    let mut s = format!(
        "# keygate bench: {}\n\n| | |\n|---|---|\n| device | `{}` |\n| model | {} |\n| AAGUID | {} |\n| firmware | {} |\n| CTAP | {} |\n| extensions | {} |\n| PIN | {} |\n| UV | {} |\n| discoverable slots left | {} |\n| result | **{}** |\n\n| step | result | ms | detail |\n|---|---|---|---|\n",
        d.model.clone().unwrap_or_else(|| d.product.clone()),
        d.id,
        d.model.clone().unwrap_or_else(|| "unknown".into()),
        d.aaguid.map(|a| a.to_string()).unwrap_or_default(),
        d.firmware.clone().unwrap_or_default(),
        d.versions.join(", "),
        d.extensions.join(", "),
        match d.pin_set {
            Some(true) => format!("set ({} retries)", d.pin_retries.unwrap_or(0)),
            Some(false) => "not set".into(),
            None => "unsupported".into(),
        },
        d.uv_supported,
        d.remaining_discoverable_credentials.map(|n| n.to_string()).unwrap_or_default(),
        if r.passed { "PASS" } else { "FAIL" },
    );
    for st in &r.steps {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            st.name,
            if st.ok { "✔" } else { "✘" },
            st.ms,
            st.detail.replace('|', "/")
        ));
    }
    s
}

pub fn junit(r: &KeyReport) -> String {
    let failures = r.steps.iter().filter(|s| !s.ok).count();
    let total: f64 = r.steps.iter().map(|s| s.ms).sum::<f64>() / 1000.0;
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"keygate bench {}\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n",
        xml(&r.device.id),
        r.steps.len()
    );
    for st in &r.steps {
        s.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            xml(&r.device.id),
            xml(&st.name),
            st.ms / 1000.0
        ));
        if !st.ok {
            s.push_str(&format!("<failure message=\"{}\"/>", xml(&st.detail)));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("</testsuite>\n");
    s
}

/// Write `<out>/<n>-<slug>.{json,md,xml}` for one report.
pub fn write_reports(out: &Path, n: usize, r: &KeyReport) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let slug: String = r
        .device
        .id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let base = out.join(format!("{n}-{slug}"));
    std::fs::write(base.with_extension("json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(base.with_extension("md"), markdown(r))?;
    std::fs::write(base.with_extension("xml"), junit(r))?;
    Ok(())
}
