// Three fixes to ipywidgets' FileUpload in the browser, installed once per page. FileUpload reads
// each chosen file with FileReader.readAsArrayBuffer and sends the bytes to the kernel; this
// script changes which bytes it reads. The upload's name, type and size stay the original file's.
//
// - Too big: a file over the kernel's websocket limit would drop the connection, and every
//   upload after it would be lost. Such files are read as a few placeholder bytes instead; the
//   kernel answers from the size with a sentence.
// - Big JPEG (a phone photo): 4 MB through the websocket takes longer than the model. The photo
//   is decoded at 1/2, 1/4 or 1/8 scale (never below minSide pixels, the same scale the kernel
//   would use) and sent as plain pixels: 0.56 MB for 12 MP instead of 4. Any doubt (not a
//   baseline or progressive JPEG, a header we can't read, too many pixels, a decoding error or a
//   decoder still busy after 5 s, no ImageDecoder outside https or localhost) sends the original
//   bytes: the kernel then decodes them itself, or says what is wrong.
// - Same photo twice: the hidden <input type=file> keeps the last choice, so choosing it again
//   fired no change event. The input is emptied before each file dialog opens.
(function (limit, shrinkFrom, minSide, maxPixels) {
  if (window.bearUploadGuard) { return; }
  window.bearUploadGuard = true;

  async function jpegSize(blob) {
    const bytes = new DataView(await blob.slice(0, 1 << 18).arrayBuffer());
    if (bytes.byteLength < 4 || bytes.getUint16(0) !== 0xffd8) { return null; }
    for (let i = 2; i + 9 < bytes.byteLength; i += 2 + bytes.getUint16(i + 2)) {
      if (bytes.getUint8(i) !== 0xff) { return null; }
      const marker = bytes.getUint8(i + 1);
      if (marker === 0xc0 || marker === 0xc1 || marker === 0xc2) {  // baseline, extended, progressive
        return { height: bytes.getUint16(i + 5), width: bytes.getUint16(i + 7) };
      }
    }
    return null;
  }

  async function shrink(blob) {
    const size = await jpegSize(blob);
    if (!size || size.width * size.height > maxPixels) { return blob; }
    const scale = [8, 4, 2].find(s => Math.min(size.width, size.height) / s >= minSide);
    if (!scale) { return blob; }
    const decoder = new ImageDecoder({ data: blob.stream(), type: "image/jpeg",
      desiredWidth: Math.ceil(size.width / scale), desiredHeight: Math.ceil(size.height / scale) });
    const frame = (await decoder.decode()).image;  // complete frames only: a truncated file throws
    const width = frame.displayWidth, height = frame.displayHeight;  // EXIF rotation applied
    const context = new OffscreenCanvas(width, height).getContext("2d");
    context.drawImage(frame, 0, 0);
    frame.close();
    decoder.close();
    // The pixels go as a PPM file (a header, then RGB bytes), not as a JPEG: the canvas's JPEG
    // encoder waits for the page to be idle, which a Voila page seldom is (1 s, measured).
    const rgba = context.getImageData(0, 0, width, height).data;
    const header = new TextEncoder().encode(`P6\n${width} ${height}\n255\n`);
    const ppm = new Uint8Array(header.length + width * height * 3);
    ppm.set(header);
    for (let i = 0, j = header.length; i < rgba.length; i += 4, j += 3) {
      ppm[j] = rgba[i]; ppm[j + 1] = rgba[i + 1]; ppm[j + 2] = rgba[i + 2];
    }
    return new Blob([ppm]);
  }

  const read = FileReader.prototype.readAsArrayBuffer;
  FileReader.prototype.readAsArrayBuffer = function (blob) {
    if (blob && blob.size > limit) { return read.call(this, new Blob(["too large"])); }
    if (blob && blob.size >= shrinkFrom && blob.type === "image/jpeg" && window.ImageDecoder) {
      const patience = new Promise((_, reject) => setTimeout(reject, 5000));  // a decoder that hangs: send as is
      Promise.race([shrink(blob), patience]).catch(() => blob).then(small => read.call(this, small));
      return undefined;
    }
    return read.call(this, blob);
  };

  const click = HTMLInputElement.prototype.click;
  HTMLInputElement.prototype.click = function () {
    if (this.type === "file") { this.value = ""; }
    return click.call(this);
  };
})
