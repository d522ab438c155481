"""Camera backends behind one small Protocol (synthetic, folder, picamera2)."""
