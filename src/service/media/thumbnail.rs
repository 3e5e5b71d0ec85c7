//! Thumbnails of PNG, JPEG, GIF and WebP images in the spec's suggested sizes, generated on first
//! request (off the async threads) and cached: a file in the content-addressed store plus a row.

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::Path;

use bytes::Bytes;
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::imageops::FilterType;
use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageError, ImageFormat, ImageReader,
    Limits, RgbaImage,
};

use super::{Access, Download, Files};
use crate::store;
use crate::store::media::{ThumbnailKey, ThumbnailRow};
use crate::{AppState, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Crop,
    Scale,
}

impl Method {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "crop" => Some(Self::Crop),
            "scale" => Some(Self::Scale),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// The sizes the spec says servers should produce.
const SIZES: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// Decoding bounds: a small file can declare a huge canvas ("decompression bomb").
const MAX_SIDE: u32 = 12_000;
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// Frames of an animated thumbnail; a longer animation is cut here.
const MAX_FRAMES: usize = 300;
const JPEG_QUALITY: u8 = 80;

/// The standard size serving a request for `width`×`height`: the smallest at least as large, preferring
/// the requested method; if none is that large, the largest there is.
pub fn choose_size(width: u32, height: u32, method: Method) -> (u32, u32, Method) {
    let fits = |(w, h, _): &&(u32, u32, Method)| *w >= width && *h >= height;
    let smallest = |candidates: Vec<&(u32, u32, Method)>| {
        candidates
            .into_iter()
            .min_by_key(|(w, h, _)| w * h)
            .copied()
    };
    smallest(
        SIZES
            .iter()
            .filter(|s| s.2 == method)
            .filter(fits)
            .collect(),
    )
    .or_else(|| smallest(SIZES.iter().filter(fits).collect()))
    .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Width and height.
pub type Size = (u32, u32);
/// A region of an image: x, y, width, height.
pub type Region = (u32, u32, u32, u32);

/// The dimensions of a `method` thumbnail of a `w`×`h` image for the box `tw`×`th`, and the centred crop
/// to take first. Never larger than the source.
pub fn plan(w: u32, h: u32, tw: u32, th: u32, method: Method) -> (Size, Option<Region>) {
    match method {
        Method::Scale => {
            if w <= tw && h <= th {
                return ((w, h), None);
            }
            let ratio = f64::min(tw as f64 / w as f64, th as f64 / h as f64);
            let out = |side: u32| ((side as f64 * ratio).round() as u32).max(1);
            ((out(w), out(h)), None)
        }
        Method::Crop => {
            // The largest region of the target's aspect ratio inside the image, centred.
            let (rw, rh) = if (w as u64) * (th as u64) > (h as u64) * (tw as u64) {
                (((h as u64 * tw as u64) / th as u64).max(1) as u32, h)
            } else {
                (w, ((w as u64 * th as u64) / tw as u64).max(1) as u32)
            };
            let crop = ((w - rw) / 2, (h - rh) / 2, rw, rh);
            let out = if rw > tw { (tw, th) } else { (rw, rh) };
            let crop = (crop != (0, 0, w, h)).then_some(crop);
            (out, crop)
        }
    }
}

/// The thumbnail of some media, from the cache or made now.
pub async fn thumbnail(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    (width, height, method): (u32, u32, Method),
    animated: bool,
    timeout_ms: Option<u64>,
    access: Access,
) -> Result<Download> {
    if width == 0 || height == 0 {
        return Err(Error::invalid_param(
            "width and height must be positive integers",
        ));
    }
    let row = super::find_uploaded(state, server_name, media_id, timeout_ms, access).await?;
    let source_sha256 = row.sha256.unwrap_or_default();
    let (tw, th, method) = choose_size(width, height, method);
    let key = ThumbnailKey {
        source_sha256: &source_sha256,
        width: tw as i32,
        height: th as i32,
        method: method.as_str(),
        animated,
    };
    let files = Files::new(state);
    if let Some(cached) = store::media::find_thumbnail(&state.db, &key).await? {
        // A file lost from disk is simply generated again.
        if let Ok((file, size)) = files.open(&cached.sha256).await {
            return Ok(thumbnail_download(file, size, cached.content_type));
        }
    }
    let source = files.path_of(&source_sha256)?;
    let generated =
        tokio::task::spawn_blocking(move || generate(&source, tw, th, method, animated))
            .await
            .map_err(Error::internal)??;
    let thumb = match generated {
        Generated::Original { content_type } => ThumbnailRow {
            sha256: source_sha256.clone(),
            content_type: content_type.into(),
            size: row.size.unwrap_or(0),
        },
        Generated::Image {
            bytes,
            content_type,
        } => {
            let body =
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))]);
            let stored = files.store(body, u64::MAX).await?;
            ThumbnailRow {
                sha256: stored.sha256,
                content_type: content_type.into(),
                size: stored.size as i64,
            }
        }
    };
    store::media::insert_thumbnail(&state.db, &key, &thumb).await?;
    let (file, size) = files.open(&thumb.sha256).await?;
    Ok(thumbnail_download(file, size, thumb.content_type))
}

fn thumbnail_download(file: tokio::fs::File, size: u64, content_type: String) -> Download {
    let extension = content_type
        .strip_prefix("image/")
        .unwrap_or("png")
        .to_owned();
    Download {
        file,
        size,
        content_type: Some(content_type),
        filename: Some(format!("thumbnail.{extension}")),
    }
}

enum Generated {
    /// The source already is what was asked for (no larger than the box, nothing to crop, and not an
    /// animation that was not wanted): serve it as it is, as the spec prefers.
    Original { content_type: &'static str },
    Image {
        bytes: Vec<u8>,
        content_type: &'static str,
    },
}

fn cannot_thumbnail() -> Error {
    Error::unknown("Cannot generate thumbnails for the requested content")
}

fn image_error(e: ImageError) -> Error {
    match e {
        ImageError::Limits(_) => Error::too_large("Content is too large to thumbnail"),
        ImageError::IoError(e) => Error::internal(format!("reading an image: {e}")),
        _ => cannot_thumbnail(),
    }
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::internal(format!("opening {path:?}: {e}")))
}

fn mime_of(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Gif => "image/gif",
        ImageFormat::WebP => "image/webp",
        _ => "image/png",
    }
}

/// Decodes, crops and scales. Blocking: run it on the blocking pool.
fn generate(path: &Path, tw: u32, th: u32, method: Method, animated: bool) -> Result<Generated> {
    let mut reader = ImageReader::new(open(path)?)
        .with_guessed_format()
        .map_err(Error::internal)?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP)) => {
            f
        }
        _ => return Err(cannot_thumbnail()),
    };
    reader.limits(limits());
    let (w, h) = reader.into_dimensions().map_err(image_error)?;
    let ((ow, oh), crop) = plan(w, h, tw, th, method);
    let is_animation = is_animation(path, format)?;
    if (ow, oh) == (w, h) && crop.is_none() && (!is_animation || animated) {
        return Ok(Generated::Original {
            content_type: mime_of(format),
        });
    }
    // Animated GIF and WebP keep their animation when asked; APNG gets a still (the spec allows it).
    if animated && is_animation && matches!(format, ImageFormat::Gif | ImageFormat::WebP) {
        let bytes = animated_gif(path, format, (ow, oh), crop)?;
        return Ok(Generated::Image {
            bytes,
            content_type: "image/gif",
        });
    }
    let mut reader = ImageReader::with_format(open(path)?, format);
    reader.limits(limits());
    let mut image = reader.decode().map_err(image_error)?;
    if let Some((x, y, cw, ch)) = crop {
        image = image.crop_imm(x, y, cw, ch);
    }
    if (image.width(), image.height()) != (ow, oh) {
        image = image.resize_exact(ow, oh, FilterType::Triangle);
    }
    let mut bytes = Cursor::new(Vec::new());
    // JPEG stays JPEG (photos compress far better); anything else becomes PNG, keeping transparency.
    if format == ImageFormat::Jpeg {
        let encoder = JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY);
        DynamicImage::ImageRgb8(image.to_rgb8())
            .write_with_encoder(encoder)
            .map_err(Error::internal)?;
        Ok(Generated::Image {
            bytes: bytes.into_inner(),
            content_type: "image/jpeg",
        })
    } else {
        image
            .write_to(&mut bytes, ImageFormat::Png)
            .map_err(Error::internal)?;
        Ok(Generated::Image {
            bytes: bytes.into_inner(),
            content_type: "image/png",
        })
    }
}

/// Whether the file holds several frames (animated GIF, animated WebP, APNG).
fn is_animation(path: &Path, format: ImageFormat) -> Result<bool> {
    let reader = open(path)?;
    Ok(match format {
        ImageFormat::Png => PngDecoder::new(reader)
            .and_then(|d| d.is_apng())
            .map_err(image_error)?,
        ImageFormat::WebP => WebPDecoder::new(reader)
            .map(|d| d.has_animation())
            .map_err(image_error)?,
        ImageFormat::Gif => {
            let mut decoder = GifDecoder::new(reader).map_err(image_error)?;
            decoder.set_limits(limits()).map_err(image_error)?;
            decoder.into_frames().take(2).count() > 1
        }
        _ => false,
    })
}

/// An animated GIF thumbnail of an animated GIF or WebP. Frames are decoded, resized and encoded one at
/// a time, so memory holds one canvas, not the animation; past `MAX_FRAMES` the animation is cut.
fn animated_gif(
    path: &Path,
    format: ImageFormat,
    (ow, oh): Size,
    crop: Option<Region>,
) -> Result<Vec<u8>> {
    let reader = open(path)?;
    let frames = match format {
        ImageFormat::Gif => {
            let mut decoder = GifDecoder::new(reader).map_err(image_error)?;
            decoder.set_limits(limits()).map_err(image_error)?;
            decoder.into_frames()
        }
        ImageFormat::WebP => {
            let mut decoder = WebPDecoder::new(reader).map_err(image_error)?;
            decoder.set_limits(limits()).map_err(image_error)?;
            decoder.into_frames()
        }
        _ => return Err(cannot_thumbnail()),
    };
    let resized = frames.take(MAX_FRAMES).map(|frame| {
        frame.map(|frame| {
            let delay = frame.delay();
            let mut buffer: RgbaImage = frame.into_buffer();
            if let Some((x, y, cw, ch)) = crop {
                buffer = image::imageops::crop_imm(&buffer, x, y, cw, ch).to_image();
            }
            if buffer.dimensions() != (ow, oh) {
                buffer = image::imageops::resize(&buffer, ow, oh, FilterType::Triangle);
            }
            Frame::from_parts(buffer, 0, 0, delay)
        })
    });
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(Error::internal)?;
        encoder.try_encode_frames(resized).map_err(image_error)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_smallest_standard_size_at_least_as_large() {
        assert_eq!(choose_size(20, 20, Method::Crop), (32, 32, Method::Crop));
        assert_eq!(choose_size(50, 50, Method::Crop), (96, 96, Method::Crop));
        assert_eq!(
            choose_size(300, 200, Method::Scale),
            (320, 240, Method::Scale)
        );
        assert_eq!(
            choose_size(321, 200, Method::Scale),
            (640, 480, Method::Scale)
        );
        assert_eq!(
            choose_size(200, 200, Method::Crop),
            (320, 240, Method::Scale)
        );
        assert_eq!(
            choose_size(5000, 5000, Method::Scale),
            (800, 600, Method::Scale)
        );
    }

    #[test]
    fn scale_keeps_aspect_and_never_upscales() {
        assert_eq!(plan(1000, 800, 320, 240, Method::Scale), ((300, 240), None));
        assert_eq!(plan(100, 50, 320, 240, Method::Scale), ((100, 50), None));
    }

    #[test]
    fn crop_takes_the_centre_and_never_upscales() {
        assert_eq!(
            plan(200, 100, 96, 96, Method::Crop),
            ((96, 96), Some((50, 0, 100, 100)))
        );
        assert_eq!(
            plan(50, 40, 96, 96, Method::Crop),
            ((40, 40), Some((5, 0, 40, 40)))
        );
        assert_eq!(plan(32, 32, 32, 32, Method::Crop), ((32, 32), None));
    }
}
