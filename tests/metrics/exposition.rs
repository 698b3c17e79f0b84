//! A scrape read by a real exposition parser (`openmetrics-parser`, which passes the
//! OpenMetrics conformance suite and parses the Prometheus text format too), flattened into
//! the series Prometheus would store: `name{labels} value`, with counters under their
//! `_total` name and histograms as `_bucket{le}`, `_sum` and `_count`.

use std::collections::BTreeMap;

use openmetrics_parser::{MetricNumber, OpenMetricsValue, PrometheusValue};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// What a scrape held, with the family names and types the parser read.
#[derive(Debug)]
pub struct Scrape {
    pub series: Vec<Series>,
    /// Family name (as the format writes it) -> type (`counter`, `gauge`, `histogram`).
    pub families: BTreeMap<String, String>,
}

fn histogram_series(
    out: &mut Vec<Series>,
    name: &str,
    labels: &Labels,
    h: &openmetrics_parser::HistogramValue,
) {
    for b in &h.buckets {
        let mut l = labels.clone();
        let le = if b.upper_bound.is_infinite() {
            "+Inf".to_string()
        } else {
            b.upper_bound.to_string()
        };
        l.insert("le".into(), le);
        out.push(Series {
            name: format!("{name}_bucket"),
            labels: l,
            value: b.count.as_f64(),
        });
    }
    let sum = h.sum.map(|s| s.as_f64()).expect("a histogram's _sum");
    let count = h.count.expect("a histogram's _count") as f64;
    for (suffix, value) in [("_sum", sum), ("_count", count)] {
        out.push(Series {
            name: format!("{name}{suffix}"),
            labels: labels.clone(),
            value,
        });
    }
}

fn number(n: &MetricNumber) -> f64 {
    n.as_f64()
}

impl Scrape {
    /// Parse OpenMetrics text (strict: `# EOF`, counter `_total` samples, unit suffixes).
    pub fn openmetrics(text: &str) -> Scrape {
        let exposition = openmetrics_parser::openmetrics::parse_openmetrics(text)
            .unwrap_or_else(|e| panic!("not valid OpenMetrics: {e:?}\n{text}"));
        let mut series = Vec::new();
        let mut families = BTreeMap::new();
        for (name, family) in &exposition.families {
            families.insert(name.clone(), family.family_type.to_string());
            for sample in family.iter_samples() {
                let labels = labels_of(sample.get_labelset().expect("labels"));
                match &sample.value {
                    OpenMetricsValue::Counter(c) => series.push(Series {
                        name: format!("{name}_total"),
                        labels,
                        value: number(&c.value),
                    }),
                    OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => {
                        series.push(Series {
                            name: name.clone(),
                            labels,
                            value: number(n),
                        })
                    }
                    OpenMetricsValue::Histogram(h) => {
                        histogram_series(&mut series, name, &labels, h)
                    }
                    other => panic!("{name}: unexpected value {other:?}"),
                }
            }
        }
        Scrape { series, families }
    }

    /// Parse the Prometheus text format 0.0.4.
    pub fn prometheus(text: &str) -> Scrape {
        let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
            .unwrap_or_else(|e| panic!("not valid Prometheus text: {e:?}\n{text}"));
        let mut series = Vec::new();
        let mut families = BTreeMap::new();
        for (name, family) in &exposition.families {
            families.insert(name.clone(), family.family_type.to_string());
            for sample in family.iter_samples() {
                let labels = labels_of(sample.get_labelset().expect("labels"));
                match &sample.value {
                    PrometheusValue::Counter(c) => series.push(Series {
                        name: name.clone(),
                        labels,
                        value: number(&c.value),
                    }),
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => {
                        series.push(Series {
                            name: name.clone(),
                            labels,
                            value: number(n),
                        })
                    }
                    PrometheusValue::Histogram(h) => {
                        histogram_series(&mut series, name, &labels, h)
                    }
                    other => panic!("{name}: unexpected value {other:?}"),
                }
            }
        }
        Scrape { series, families }
    }

    /// The one series `name` whose labels include `want`; None when there is none.
    pub fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<_> = self
            .series
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {want:?} matches several series: {matching:?}"
        );
        matching.first().map(|s| s.value)
    }

    /// [`Scrape::get`], which must exist.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.get(name, want)
            .unwrap_or_else(|| panic!("no series {name} {want:?} in {:#?}", self.names()))
    }

    /// Every value label `label` takes in the series called `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .series
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The series sorted, for comparing two scrapes.
    pub fn sorted(&self) -> Vec<Series> {
        let mut v = self.series.clone();
        v.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        v
    }
}

fn labels_of(set: openmetrics_parser::LabelSet<'_>) -> Labels {
    set.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
