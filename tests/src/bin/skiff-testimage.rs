//! Builds skiff's test images as OCI layouts and pushes them to a registry, for the demo and
//! the Makefile (the tests use the library directly).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use skiff_tests::busybox::{write_busybox_layout, Variant, BUSYBOX_TAG};
use skiff_tests::cluster_images::push_cluster_images;
use skiff_tests::registry::{push_to, Format};

#[derive(Parser)]
#[command(about = "Build and push skiff's test images")]
enum Cli {
    /// Write the busybox image (from the host's static /bin/busybox) as an OCI layout.
    Busybox {
        /// Which image.
        #[arg(long, value_enum, default_value_t = VariantArg::Plain)]
        variant: VariantArg,
        /// Layout directory (created if missing; other tags in it are kept).
        #[arg(long)]
        out: PathBuf,
        /// Tag inside the layout.
        #[arg(long, default_value = BUSYBOX_TAG)]
        tag: String,
    },
    /// Push an image of an OCI layout to a registry over plain HTTP (skopeo), printing its digest.
    Push {
        /// OCI layout directory.
        #[arg(long)]
        layout: PathBuf,
        /// Tag inside the layout.
        #[arg(long, default_value = BUSYBOX_TAG)]
        tag: String,
        /// Destination, ADDR/REPO:TAG (e.g. 127.0.0.1:5000/busybox:latest).
        #[arg(long)]
        to: String,
        /// Manifest format in the registry.
        #[arg(long, value_enum, default_value_t = FormatArg::Oci)]
        format: FormatArg,
        /// The tag names an image index: push every platform (skopeo copy --all).
        #[arg(long)]
        all: bool,
    },
    /// Build the images a Kubernetes cluster on skiff runs (nginx, busybox, CoreDNS) and push
    /// each to a registry under its public name's path (library/nginx:latest, …).
    ClusterImages {
        /// The registry, HOST:PORT (plain HTTP).
        #[arg(long)]
        registry: String,
        /// The CoreDNS binary (built by scripts/gotools.sh).
        #[arg(long)]
        coredns: PathBuf,
        /// Where downloaded Debian packages and image layouts are kept.
        #[arg(long)]
        cache: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    /// Runs as root.
    Plain,
    /// Runs as user skiff (uid 1000).
    User,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// OCI manifest.
    Oci,
    /// Docker v2 schema 2 manifest.
    V2s2,
}

fn main() -> Result<()> {
    match Cli::parse() {
        Cli::Busybox { variant, out, tag } => {
            let variant = match variant {
                VariantArg::Plain => Variant::Plain,
                VariantArg::User => Variant::User,
            };
            let digests = write_busybox_layout(variant, &out, &tag)?;
            println!("{}", digests.manifest);
        }
        Cli::Push {
            layout,
            tag,
            to,
            format,
            all,
        } => {
            let format = match format {
                FormatArg::Oci => Format::Oci,
                FormatArg::V2s2 => Format::DockerV2,
            };
            println!("{}", push_to(&layout, &tag, &to, format, all)?);
        }
        Cli::ClusterImages {
            registry,
            coredns,
            cache,
        } => {
            for image in push_cluster_images(&registry, &coredns, &cache)? {
                println!("{} {}", image.name, image.digest);
            }
        }
    }
    Ok(())
}
