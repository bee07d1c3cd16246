//! Port lists of firewall-mark rules: `"80,443"`, `"10000-10100"`,
//! `"80,443,8000-8100"`.

use std::fmt;

/// A list of inclusive port ranges, each within 1..=65535, in the order written.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PortSet(pub Vec<(u16, u16)>);

impl PortSet {
    /// Parse a comma-separated list of ports and `lo-hi` ranges.
    pub fn parse(s: &str) -> Result<PortSet, String> {
        let mut out = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!(
                    "malformed port list \"{s}\": empty item (expected e.g. \"80,443,8000-8100\")"
                ));
            }
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (port(a.trim(), s)?, port(b.trim(), s)?),
                None => {
                    let p = port(item, s)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(format!(
                    "malformed port list \"{s}\": range {lo}-{hi} is reversed"
                ));
            }
            out.push((lo, hi));
        }
        Ok(PortSet(out))
    }

    /// Whether `p` is in one of the ranges.
    pub fn contains(&self, p: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= p && p <= hi)
    }

    /// The first port present in both sets, if any.
    pub fn intersection(&self, other: &PortSet) -> Option<u16> {
        let mut best: Option<u16> = None;
        for &(a, b) in &self.0 {
            for &(c, d) in &other.0 {
                let lo = a.max(c);
                if lo <= b.min(d) {
                    best = Some(best.map_or(lo, |x| x.min(lo)));
                }
            }
        }
        best
    }

    /// How many ports the set covers (overlaps counted twice).
    pub fn count(&self) -> usize {
        self.0
            .iter()
            .map(|&(lo, hi)| usize::from(hi) - usize::from(lo) + 1)
            .sum()
    }
}

fn port(text: &str, whole: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!(
            "malformed port list \"{whole}\": port {p} out of range 1-65535"
        )),
        Err(_) => Err(format!(
            "malformed port list \"{whole}\": \"{text}\" is not a port (expected e.g. \"80,443,8000-8100\")"
        )),
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_lists() {
        assert_eq!(
            PortSet::parse("80,443").unwrap().0,
            vec![(80, 80), (443, 443)]
        );
        assert_eq!(
            PortSet::parse("10000-10100").unwrap().0,
            vec![(10000, 10100)]
        );
        let p = PortSet::parse("80, 443 ,8000-8100").unwrap();
        assert_eq!(p.0, vec![(80, 80), (443, 443), (8000, 8100)]);
        assert_eq!(p.to_string(), "80,443,8000-8100");
        assert_eq!(p.count(), 103);
        assert!(p.contains(8050) && !p.contains(8101));
    }

    #[test]
    fn malformed_lists() {
        for bad in [
            "", "80,", ",80", "80-", "-80", "a", "0", "70000", "90-80", "1-2-3", "80;443",
        ] {
            let e = PortSet::parse(bad).unwrap_err();
            assert!(e.contains("malformed port list"), "{bad}: {e}");
        }
    }

    #[test]
    fn intersection_finds_lowest_common_port() {
        let a = PortSet::parse("80,443,1000-2000").unwrap();
        let b = PortSet::parse("1500-3000,443").unwrap();
        assert_eq!(a.intersection(&b), Some(443));
        let c = PortSet::parse("2001-3000").unwrap();
        assert_eq!(a.intersection(&c), None);
    }
}
