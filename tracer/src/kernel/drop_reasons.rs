//! Names of `enum skb_drop_reason`, read from the kernel's BTF (the values move between kernels,
//! and new ones appear in every release: a table compiled into the binary would lie).

use std::collections::BTreeMap;

use super::btf::{BtfError, KernelBtf};

const PREFIX: &str = "SKB_DROP_REASON_";

/// Reason value -> name without the `SKB_DROP_REASON_` prefix, for the running kernel.
#[derive(Debug, Clone, Default)]
pub(crate) struct DropReasons {
    by_value: BTreeMap<u32, String>,
}

impl DropReasons {
    /// Reads `enum skb_drop_reason` (kernel >= 5.17). `Ok(None)` when the kernel has no reasons.
    pub(crate) fn from_btf(btf: &KernelBtf) -> Result<Option<Self>, BtfError> {
        match btf.enum_values("skb_drop_reason") {
            Ok(values) => Ok(Some(Self::from_pairs(values))),
            Err(BtfError::NoType { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Builds the table from (enumerator, value) pairs as BTF lists them.
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut by_value = BTreeMap::new();
        for (name, value) in pairs {
            let Ok(value) = u32::try_from(value) else { continue };
            // SKB_DROP_REASON_MAX is a bound, not a reason; SKB_CONSUMED / SKB_NOT_DROPPED_YET
            // keep their names.
            if name == "SKB_DROP_REASON_MAX" || name.starts_with("SKB_DROP_REASON_SUBSYS") {
                continue;
            }
            let short = name.strip_prefix(PREFIX).unwrap_or(&name).to_string();
            by_value.entry(value).or_insert(short);
        }
        Self { by_value }
    }

    /// The name of `value`, or `UNKNOWN_<value>` for a value this kernel's BTF does not name
    /// (a subsystem reason, say).
    pub(crate) fn name(&self, value: u32) -> String {
        self.by_value.get(&value).cloned().unwrap_or_else(|| format!("UNKNOWN_{value}"))
    }

    /// The value of reason `name` (with or without the prefix, any case).
    pub(crate) fn value(&self, name: &str) -> Option<u32> {
        let wanted = name.trim();
        let wanted = wanted.strip_prefix(PREFIX).or_else(|| wanted.strip_prefix(&PREFIX.to_ascii_lowercase())).unwrap_or(wanted);
        self.by_value.iter().find(|(_, n)| n.eq_ignore_ascii_case(wanted)).map(|(v, _)| *v)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.by_value.iter().map(|(v, n)| (*v, n.as_str()))
    }

    pub(crate) fn len(&self) -> usize {
        self.by_value.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DropReasons {
        DropReasons::from_pairs([
            ("SKB_NOT_DROPPED_YET".to_string(), 0),
            ("SKB_CONSUMED".to_string(), 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED".to_string(), 2),
            ("SKB_DROP_REASON_NO_SOCKET".to_string(), 3),
            ("SKB_DROP_REASON_NETFILTER_DROP".to_string(), 12),
            ("SKB_DROP_REASON_MAX".to_string(), 128),
            ("SKB_DROP_REASON_SUBSYS_MASK".to_string(), 0xffff_0000),
        ])
    }

    #[test]
    fn names_strip_the_prefix() {
        let r = sample();
        assert_eq!(r.name(12), "NETFILTER_DROP");
        assert_eq!(r.name(1), "SKB_CONSUMED");
        assert_eq!(r.name(77), "UNKNOWN_77");
        assert_eq!(r.len(), 5, "MAX and SUBSYS_* are bounds, not reasons");
    }

    #[test]
    fn lookup_accepts_prefix_and_case() {
        let r = sample();
        assert_eq!(r.value("NO_SOCKET"), Some(3));
        assert_eq!(r.value("no_socket"), Some(3));
        assert_eq!(r.value("SKB_DROP_REASON_NETFILTER_DROP"), Some(12));
        assert_eq!(r.value("NOT_A_REASON"), None);
    }

    #[test]
    fn running_kernel_names_come_from_btf() {
        let path = std::path::Path::new(super::super::btf::VMLINUX_BTF);
        if !path.exists() {
            eprintln!("SKIPPED: no kernel BTF on {}", super::super::release());
            return;
        }
        let btf = KernelBtf::load(None).expect("btf");
        let Some(reasons) = DropReasons::from_btf(&btf).expect("enum") else {
            eprintln!("SKIPPED: kernel {} has no enum skb_drop_reason (< 5.17)", super::super::release());
            return;
        };
        // The witness is the kernel's own tracefs print format, which lists {value, "NAME"}.
        let format = std::fs::read_to_string("/sys/kernel/tracing/events/skb/kfree_skb/format")
            .or_else(|_| std::fs::read_to_string("/sys/kernel/debug/tracing/events/skb/kfree_skb/format"));
        let Ok(format) = format else {
            eprintln!("SKIPPED: tracefs not mounted; cannot cross-check reason names");
            return;
        };
        for name in ["NETFILTER_DROP", "NO_SOCKET", "NOT_SPECIFIED"] {
            let value = reasons.value(name).expect(name);
            assert!(format.contains(&format!("{{ {value}, \"{name}\" }}")), "{name}={value} not in tracefs format");
        }
    }
}
