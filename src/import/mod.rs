//! Importers: other load balancers' configurations turned into an xdpvs
//! config ([`ipvsadm`]: `ipvsadm -S` output and iptables MARK rules;
//! [`keepalived`]: keepalived.conf virtual servers and checkers). They
//! produce [`crate::config::Config`] values and use only the config and
//! service layers.

pub mod ipvsadm;
pub mod keepalived;
