import Foundation
import Testing
@testable import DiffusionDaemon
import ImageCodecs
import Provenance

/// The contact sheet a real daemon writes: a header with the job, sampler and steps, the class
/// name beside each row, and the images themselves unchanged in the grid.
@Suite(.serialized) struct ContactSheetTests {
    @Test func rowLabelsNameTheClassesOfEachRow() {
        #expect(JobContactSheet.rowLabels(classNames: ["Coat", "Coat", "Bag", "Bag"], columns: 2) == ["Coat", "Bag"])
        #expect(JobContactSheet.rowLabels(classNames: ["Coat", "Bag", "Bag"], columns: 2) == ["Coat, Bag", "Bag"])
        #expect(JobContactSheet.rowLabels(classNames: [nil, nil, nil], columns: 2) == ["", ""])
    }

    @Test func theDaemonsSheetIsLabelled() throws {
        let h = try DaemonHarness(delayMs: 0)
        try h.start()
        try h.drop("sheet.yml", """
        name: sheet
        classes: [T-shirt/top, Trouser, Pullover]
        images_per_class: 4
        sampler: {kind: ddim, steps: 20, eta: 0.5}
        seed: 5
        """)
        try h.waitFor("the job", timeout: 60) { h.exists("spool/done/sheet.yml") }
        try h.waitFor("the contact sheet", timeout: 30) { h.exists("out/1-sheet/contact-sheet.png") }
        #expect(h.signal(SIGTERM) == 0)
        let sheet = try ImageFile.read(path: h.root + "/out/1-sheet/contact-sheet.png").image
        if let keep = ProcessInfo.processInfo.environment["DIFFUSIOND_KEEP_SHEET"] {
            try? FileManager.default.removeItem(atPath: keep)
            try FileManager.default.copyItem(atPath: h.root + "/out/1-sheet/contact-sheet.png", toPath: keep)
        }
        let rows = try h.store().images(jobID: 1)
        #expect(rows.count == 12)
        let header = ["job 1 sheet", "ddim, 20 steps (ddim20), eta 0.5, class-conditional"]
        // The font's metrics: 6 px a character, 10 px a header line, 2 px margins.
        let labelWidth = 2 + BitmapFont.width(of: "T-shirt/top")
        let headerHeight = 2 + 10 * header.count
        let gridWidth = 4 * 28 + 5 * 2, gridHeight = 3 * 28 + 4 * 2
        #expect(sheet.height == headerHeight + gridHeight)
        #expect(sheet.width == max(labelWidth + gridWidth, 2 + BitmapFont.width(of: header[1]) + 2))
        // Every image sits in its cell unchanged.
        for row in rows {
            let image = try ImageFile.read(path: row.path).image
            let ox = labelWidth + 2 + (row.index % 4) * 30, oy = headerHeight + 2 + (row.index / 4) * 30
            for y in 0 ..< 28 { for x in 0 ..< 28 where sheet[ox + x, oy + y].first != image[x, y].first {
                Issue.record("image \(row.index) differs at (\(x), \(y))"); return
            } }
        }
        // Text where it belongs: dark pixels in each row's label cell and in the header, none elsewhere
        // outside the grid.
        func dark(_ x0: Int, _ x1: Int, _ y0: Int, _ y1: Int) -> Int {
            var n = 0
            for y in y0 ..< y1 { for x in x0 ..< x1 where sheet[x, y].first! < 128 { n += 1 } }
            return n
        }
        for r in 0 ..< 3 { #expect(dark(0, labelWidth, headerHeight + 2 + r * 30, headerHeight + 30 + r * 30) > 20, "row \(r)") }
        #expect(dark(0, sheet.width, 0, 12) > 30 && dark(0, sheet.width, 12, headerHeight) > 60)
        #expect(dark(0, labelWidth, headerHeight + gridHeight - 2, sheet.height) == 0)
    }
}
