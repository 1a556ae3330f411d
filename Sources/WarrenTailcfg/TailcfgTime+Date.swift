import Foundation

extension TailcfgTime {
    /// The instant `date` (to the nanosecond Foundation keeps).
    public init(date: Date) {
        let t = date.timeIntervalSince1970
        let seconds = t.rounded(.down)
        self.init(secondsSince1970: Int64(seconds), nanoseconds: Int32(min(999_999_999, max(0, (t - seconds) * 1e9))))
    }

    /// The same instant as a Foundation date.
    public var date: Date { Date(timeIntervalSince1970: Double(secondsSince1970) + Double(nanoseconds) / 1e9) }
}
