fn main() { println!("xdpvs"); }
