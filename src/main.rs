fn main() {
    println!("xdpvs");
}
